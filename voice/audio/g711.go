package audio

// G.711 companding (ITU-T G.711), written from the standard's segment
// definitions: mu-law uses a bias of 0x84 and 8 segments; A-law uses 7-bit
// mantissas with the even bits inverted (XOR 0x55).

var muLawDecode, aLawDecode [256]int16

func init() {
	for i := range 256 {
		muLawDecode[i] = decodeMuLaw(byte(i))
		aLawDecode[i] = decodeALaw(byte(i))
	}
}

const muBias = 0x84

func muLawEncode(s int16) byte {
	v := int(s)
	sign := 0
	if v < 0 {
		v, sign = -v, 0x80
	}
	if v > 32635 {
		v = 32635
	}
	v += muBias
	exp := 7
	for mask := 0x4000; v&mask == 0 && exp > 0; mask >>= 1 {
		exp--
	}
	mant := (v >> (exp + 3)) & 0x0f
	return ^byte(sign | exp<<4 | mant)
}

func decodeMuLaw(c byte) int16 {
	c = ^c
	sign, exp, mant := c&0x80, int(c>>4)&0x07, int(c&0x0f)
	v := ((mant << 3) + muBias) << exp
	v -= muBias
	if sign != 0 {
		return int16(-v)
	}
	return int16(v)
}

func aLawEncode(s int16) byte {
	v := int(s)
	sign := 0x80
	if v < 0 {
		v, sign = -v-1, 0
	}
	if v > 32767 {
		v = 32767
	}
	var c int
	if v < 256 {
		c = v >> 4
	} else {
		exp := 7
		for mask := 0x4000; v&mask == 0 && exp > 1; mask >>= 1 {
			exp--
		}
		c = exp<<4 | (v>>(exp+3))&0x0f
	}
	return byte((c | sign) ^ 0x55)
}

func decodeALaw(c byte) int16 {
	c ^= 0x55
	sign, exp, mant := c&0x80, int(c>>4)&0x07, int(c&0x0f)
	var v int
	if exp == 0 {
		v = mant<<4 + 8
	} else {
		v = (mant<<4 + 0x108) << (exp - 1)
	}
	if sign == 0 {
		return int16(-v)
	}
	return int16(v)
}
