package telephony

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/icholy/digest"
	"github.com/pion/rtp"
)

const offerPCMAAndEvents = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n" +
	"m=audio 30000 RTP/AVP 8 96 18\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:96 telephone-event/8000\r\na=rtpmap:18 G729/8000\r\na=ptime:20\r\na=sendrecv\r\n"

// Offer/answer: avb picks PCMU over PCMA, takes the peer's telephone-event
// payload type, reads hold, and refuses what it cannot speak.
func TestParseOffer(t *testing.T) {
	m, err := ParseOffer([]byte(offerPCMAAndEvents))
	if err != nil || m.Codec != (Codec{"PCMA", 8}) || m.DTMF != 96 || m.Addr != netip.MustParseAddrPort("192.0.2.10:30000") || m.Hold {
		t.Fatalf("%+v %v", m, err)
	}
	both := strings.Replace(offerPCMAAndEvents, "RTP/AVP 8 96 18", "RTP/AVP 8 0 96", 1)
	if m, _ := ParseOffer([]byte(both)); m.Codec != PCMU {
		t.Fatalf("PCMU is preferred: %+v", m)
	}
	hold := strings.Replace(offerPCMAAndEvents, "a=sendrecv", "a=sendonly", 1)
	if m, _ := ParseOffer([]byte(hold)); !m.Hold {
		t.Fatal("sendonly is hold")
	}
	g729 := strings.Replace(offerPCMAAndEvents, "RTP/AVP 8 96 18", "RTP/AVP 18", 1)
	if _, err := ParseOffer([]byte(g729)); !errors.Is(err, ErrNoCodec) {
		t.Fatalf("G.729 only: %v", err)
	}
	for _, bad := range []string{"", "v=0\r\n", strings.Replace(offerPCMAAndEvents, "192.0.2.10\r\nt", "nowhere\r\nt", 1)} {
		if _, err := ParseOffer([]byte(bad)); err == nil {
			t.Fatalf("accepted %q", bad)
		}
	}
	// avb's answer names the chosen codec and the peer's event type, and
	// reads back as what was agreed.
	answer := Describe(netip.MustParseAddrPort("127.0.0.1:40002"), 7, &m)
	back, err := ParseOffer(answer)
	if err != nil || back.Codec != m.Codec || back.DTMF != 96 || back.Addr.Port() != 40002 {
		t.Fatalf("answer %s read as %+v %v", answer, back, err)
	}
}

// FuzzParseOffer: any body is refused or read into a codec avb speaks at a
// real address, and avb's answer to it reads back the same.
func FuzzParseOffer(f *testing.F) {
	f.Add([]byte(offerPCMAAndEvents))
	f.Add(Describe(netip.MustParseAddrPort("127.0.0.1:4000"), 1, nil))
	f.Add([]byte("v=0\r\nc=IN IP6 ::1\r\nm=audio 1 RTP/AVP 0\r\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := ParseOffer(body)
		if err != nil {
			return
		}
		if (m.Codec.Name != "PCMU" && m.Codec.Name != "PCMA") || m.Codec.PayloadType > 127 || !m.Addr.IsValid() || m.Addr.Port() == 0 {
			t.Fatalf("read %+v", m)
		}
		back, err := ParseOffer(Describe(netip.MustParseAddrPort("127.0.0.1:4000"), 1, &m))
		if err != nil || back.Codec != m.Codec || back.DTMF != m.DTMF {
			t.Fatalf("answer to %+v reads %+v %v", m, back, err)
		}
	})
}

// FuzzNumber: what Number accepts is E.164 ("+" and 3 to 15 digits).
func FuzzNumber(f *testing.F) {
	for _, s := range []string{"+15550100", "15550100;phone-context=x", "alice", "+1", "+"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n := Number(s)
		if n == "" {
			return
		}
		digits := n[1:]
		if n[0] != '+' || len(digits) < 3 || len(digits) > 15 || strings.Trim(digits, "0123456789") != "" {
			t.Fatalf("%q read as %q", s, n)
		}
	})
}

// FuzzParseDTMF: an RFC 4733 payload is a key of the pad or nothing.
func FuzzParseDTMF(f *testing.F) {
	f.Add([]byte{5, 0x8a, 0, 160})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, _, ok := ParseDTMF(b)
		if ok && !strings.ContainsRune("0123456789*#ABCD", d) {
			t.Fatalf("%v read as %q", b, d)
		}
	})
}

// Digest authentication with HA1 only: the answer a SIP client computes
// from the password is accepted, a wrong password or another instance's
// key is not, and a challenge expires.
func TestDigest(t *testing.T) {
	now := time.Now()
	n := Nonces{Key: []byte("k1"), Realm: "avb", now: func() time.Time { return now }}
	trunks := []Trunk{{Name: "carrier", Username: "trunk1", HA1: HA1("trunk1", "avb", "s3cret")}}
	answer := func(chal, password string) string {
		c, err := digest.ParseChallenge(chal)
		if err != nil {
			t.Fatal(err)
		}
		cred, err := digest.Digest(c, digest.Options{Method: "INVITE", URI: "sip:+15550100@127.0.0.1", Username: "trunk1", Password: password, Count: 1})
		if err != nil {
			t.Fatal(err)
		}
		return cred.String()
	}
	chal := n.Challenge()
	if tr, err := n.Verify(answer(chal, "s3cret"), "INVITE", trunks); err != nil || tr.Name != "carrier" {
		t.Fatalf("right password: %v", err)
	}
	if _, err := n.Verify(answer(chal, "wrong"), "INVITE", trunks); !errors.Is(err, ErrBadDigest) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := n.Verify(answer(chal, "s3cret"), "BYE", trunks); !errors.Is(err, ErrBadDigest) {
		t.Fatalf("answer for another method: %v", err)
	}
	other := Nonces{Key: []byte("k2"), Realm: "avb"}
	if _, err := n.Verify(answer(other.Challenge(), "s3cret"), "INVITE", trunks); !errors.Is(err, ErrBadDigest) {
		t.Fatalf("a nonce avb did not sign: %v", err)
	}
	now = now.Add(nonceTTL + time.Second)
	if _, err := n.Verify(answer(chal, "s3cret"), "INVITE", trunks); !errors.Is(err, ErrStaleNonce) {
		t.Fatalf("an old challenge: %v", err)
	}
	if FromSource(netip.MustParseAddr("203.0.113.7"), []Trunk{{Name: "pbx", Sources: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}}) == nil {
		t.Fatal("an allowed source")
	}
	if FromSource(netip.MustParseAddr("198.51.100.1"), []Trunk{{Name: "pbx", Sources: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}}}) != nil {
		t.Fatal("another source")
	}
}

// The jitter buffer on a real socket: packets sent out of order, with one
// lost and one too late, come out in order, 20 ms apart; the loss is
// concealed, the late one dropped, and the added delay stays in bounds.
func TestJitterBufferReordersConcealsAndDropsLate(t *testing.T) {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	peer, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := NewSession(ctx, conn, Media{Addr: netip.MustParseAddrPort(peer.LocalAddr().String()), Codec: PCMU, DTMF: 101})
	defer s.Close()
	to := netip.MustParseAddrPort(conn.LocalAddr().String())
	send := func(seq uint16) {
		frame := bytes.Repeat([]byte{byte(seq)}, frameBytes)
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * frameBytes, SSRC: 1}, Payload: frame}
		b, _ := p.Marshal()
		_, _ = peer.WriteToUDPAddrPort(b, to)
	}
	// 1..20 in real time, 5 and 6 swapped, 9 lost, 12 sent after its time.
	order := []uint16{1, 2, 3, 4, 6, 5, 7, 8, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20}
	go func() {
		for i, seq := range order {
			send(seq)
			if i == 14 {
				send(12) // long after its turn
			}
			time.Sleep(Ptime)
		}
	}()
	var got []byte
	deadline := time.After(3 * time.Second)
	for len(got) < 19 {
		select {
		case f := <-s.Frames():
			got = append(got, f[0])
		case <-deadline:
			t.Fatalf("frames %v", got)
		}
	}
	want := []byte{1, 2, 3, 4, 5, 6, 7, 8, 8, 10, 11, 11, 13, 14, 15, 16, 17, 18, 19}
	if !bytes.Equal(got, want) {
		t.Fatalf("played %v, want %v (9 and 12 concealed by repeating the frame before)", got, want)
	}
	st := s.Stats()
	if st.Lost != 2 || st.Late != 1 || st.DelayMS < 10 || st.DelayMS > float64(maxPlayout.Milliseconds()) {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("jitter buffer: %+v", st)
}
