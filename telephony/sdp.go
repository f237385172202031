// Package telephony takes phone calls: a SIP endpoint a trunk sends calls
// to (and that places calls out through one), with G.711 audio over RTP,
// RFC 4733 DTMF and a jitter buffer, bridged to the same voice engine as
// Converse. SIP parsing and transactions are sipgo's; the SDP offer/answer,
// the media path, authentication and routing are here.
package telephony

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/pion/sdp/v3"
)

// Codec is an audio codec both sides can use, at 8 kHz.
type Codec struct {
	Name        string // "PCMU" or "PCMA"
	PayloadType uint8
}

// The codecs avb speaks, in the order it prefers them.
var (
	PCMU = Codec{Name: "PCMU", PayloadType: 0}
	PCMA = Codec{Name: "PCMA", PayloadType: 8}
)

// dtmfPayloadType is the telephone-event payload type avb offers.
const dtmfPayloadType = 101

// Ptime is the packet time avb sends and asks for.
const Ptime = 20 * time.Millisecond

// Errors of offer/answer.
var (
	// ErrNoCodec: the offer has no codec avb speaks (SIP 488).
	ErrNoCodec = errors.New("no common codec: avb speaks PCMU and PCMA at 8 kHz")
	// ErrBadSDP: the body is not a usable SDP offer (SIP 400/488).
	ErrBadSDP = errors.New("the SDP offer is not usable")
)

// Media is what one side of a call negotiated: where its RTP goes, in which
// codec, the DTMF payload type (0: none) and whether it holds the call.
type Media struct {
	Addr  netip.AddrPort
	Codec Codec
	DTMF  uint8
	// Hold: the peer put the call on hold (sendonly or inactive, or the
	// old 0.0.0.0 address); no audio is sent to it meanwhile.
	Hold bool
}

// maxSDP bounds an SDP body (a real offer is under 2 KiB).
const maxSDP = 16 << 10

// ParseOffer reads the peer's offer (or answer) and picks the codec avb
// prefers among those it lists.
func ParseOffer(body []byte) (Media, error) {
	var m Media
	if len(body) == 0 || len(body) > maxSDP {
		return m, ErrBadSDP
	}
	var sd sdp.SessionDescription
	if err := sd.Unmarshal(body); err != nil {
		return m, fmt.Errorf("%w: %v", ErrBadSDP, err)
	}
	var audio *sdp.MediaDescription
	for _, md := range sd.MediaDescriptions {
		if md.MediaName.Media == "audio" && md.MediaName.Port.Value > 0 {
			audio = md
			break
		}
	}
	if audio == nil {
		return m, fmt.Errorf("%w: no audio stream", ErrBadSDP)
	}
	host := ""
	if audio.ConnectionInformation != nil && audio.ConnectionInformation.Address != nil {
		host = audio.ConnectionInformation.Address.Address
	} else if sd.ConnectionInformation != nil && sd.ConnectionInformation.Address != nil {
		host = sd.ConnectionInformation.Address.Address
	}
	addr, err := netip.ParseAddr(strings.TrimSpace(strings.SplitN(host, "/", 2)[0]))
	if err != nil {
		return m, fmt.Errorf("%w: connection address %q", ErrBadSDP, host)
	}
	port := audio.MediaName.Port.Value
	if port <= 0 || port > 65535 {
		return m, fmt.Errorf("%w: port %d", ErrBadSDP, port)
	}
	m.Addr = netip.AddrPortFrom(addr, uint16(port))
	m.Hold = addr.IsUnspecified()
	for _, a := range audio.Attributes {
		if a.Key == "sendonly" || a.Key == "inactive" {
			m.Hold = true
		}
	}
	// The payload types offered, with their rtpmap names (static types
	// 0 and 8 may come without one).
	names := map[uint8]string{0: "PCMU/8000", 8: "PCMA/8000"}
	for _, a := range audio.Attributes {
		if a.Key != "rtpmap" {
			continue
		}
		pt, name, ok := strings.Cut(a.Value, " ")
		n, err := strconv.Atoi(pt)
		if !ok || err != nil || n < 0 || n > 127 {
			continue
		}
		names[uint8(n)] = strings.ToUpper(strings.TrimSpace(name))
	}
	offered := map[string]uint8{}
	for _, f := range audio.MediaName.Formats {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || n > 127 {
			continue
		}
		name := names[uint8(n)]
		if _, seen := offered[name]; !seen {
			offered[name] = uint8(n)
		}
	}
	for _, c := range []Codec{PCMU, PCMA} {
		if pt, ok := offered[c.Name+"/8000"]; ok {
			m.Codec = Codec{Name: c.Name, PayloadType: pt}
			break
		}
	}
	if m.Codec.Name == "" {
		return m, ErrNoCodec
	}
	if pt, ok := offered["TELEPHONE-EVENT/8000"]; ok {
		m.DTMF = pt
	}
	return m, nil
}

// Describe is avb's side of the call as SDP: an answer to the peer's
// chosen codec (peer set), or an offer of every codec avb speaks.
func Describe(local netip.AddrPort, sessionID uint64, peer *Media) []byte {
	codecs := []Codec{PCMU, PCMA}
	dtmf := uint8(dtmfPayloadType)
	if peer != nil {
		codecs = []Codec{peer.Codec}
		dtmf = peer.DTMF
	}
	ip := "IP4"
	if local.Addr().Is6() {
		ip = "IP6"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "v=0\r\no=avb %d %d IN %s %s\r\ns=avb\r\nc=IN %s %s\r\nt=0 0\r\n", sessionID, sessionID, ip, local.Addr(), ip, local.Addr())
	fmt.Fprintf(&b, "m=audio %d RTP/AVP", local.Port())
	for _, c := range codecs {
		fmt.Fprintf(&b, " %d", c.PayloadType)
	}
	if dtmf != 0 {
		fmt.Fprintf(&b, " %d", dtmf)
	}
	b.WriteString("\r\n")
	for _, c := range codecs {
		fmt.Fprintf(&b, "a=rtpmap:%d %s/8000\r\n", c.PayloadType, c.Name)
	}
	if dtmf != 0 {
		fmt.Fprintf(&b, "a=rtpmap:%d telephone-event/8000\r\na=fmtp:%d 0-16\r\n", dtmf, dtmf)
	}
	fmt.Fprintf(&b, "a=ptime:%d\r\na=sendrecv\r\n", Ptime.Milliseconds())
	return []byte(b.String())
}
