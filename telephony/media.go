package telephony

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
)

// frameBytes is 20 ms of G.711 at 8 kHz (one byte a sample).
const frameBytes = 160

// rtpHeaderBytes is the header of the packets avb sends (no CSRC, no
// extension).
const rtpHeaderBytes = 12

// The jitter buffer's playout delay stays between these (phone networks:
// tens of milliseconds of jitter, bursts up to a hundred).
const (
	minPlayout = 40 * time.Millisecond
	maxPlayout = 120 * time.Millisecond
)

// RTPTimeout ends a call whose peer sent no RTP for this long (a phone
// that vanished without a BYE).
const RTPTimeout = 30 * time.Second

// silence is one frame of G.711 silence in the codec's encoding.
func silence(c Codec) []byte {
	b := make([]byte, frameBytes)
	v := byte(0xFF) // mu-law zero
	if c.Name == PCMA.Name {
		v = 0xD5 // A-law zero
	}
	for i := range b {
		b[i] = v
	}
	return b
}

// Stats is a call's media quality so far.
type Stats struct {
	Received  uint64  // audio packets received
	Lost      uint64  // never arrived (concealed)
	Late      uint64  // arrived after their time was played (dropped)
	Concealed uint64  // frames played from concealment (lost or underrun)
	JitterMS  float64 // RFC 3550 interarrival jitter
	// DelayMS is the jitter buffer's mean added delay: how long a frame
	// waited in it before the engine got it.
	DelayMS float64
}

// Session is the media of one call: RTP in through a jitter buffer to
// Frames, RTP out paced at 20 ms from Play, DTMF digits to Digits.
type Session struct {
	conn  *net.UDPConn
	codec Codec
	dtmf  uint8

	peer atomic.Pointer[netip.AddrPort]
	hold atomic.Bool

	frames chan []byte
	digits chan rune

	mu         sync.Mutex
	buf        map[uint16]*packet // the jitter buffer, by sequence number
	next       uint16             // the next sequence number to play
	started    bool               // playout began (after the first fill)
	target     time.Duration      // current playout delay
	last       []byte             // the last frame played (concealment)
	lastArrive time.Time
	lastTS     uint32
	transit    float64 // RFC 3550 jitter state, in samples
	jitter     float64
	stats      Stats
	delaySum   time.Duration
	delayN     int
	lastDigit  uint32 // the RTP timestamp of the last digit told
	heard      time.Time

	out      []byte // codec bytes to send, from head on
	head     int
	outMu    sync.Mutex
	speaking bool
	ssrc     uint32
	seq      uint16
	ts       uint32

	done chan struct{}
	once sync.Once
}

type packet struct {
	payload []byte
	arrived time.Time
}

// NewSession starts the media of a call on conn, towards peer, in codec
// (DTMF on payload type dtmf; 0 for none). It runs until ctx ends or
// Close.
func NewSession(ctx context.Context, conn *net.UDPConn, peer Media) *Session {
	s := &Session{conn: conn, codec: peer.Codec, dtmf: peer.DTMF,
		frames: make(chan []byte, 50), digits: make(chan rune, 32),
		buf: map[uint16]*packet{}, target: minPlayout,
		ssrc: rand.Uint32(), seq: uint16(rand.Uint32()), ts: rand.Uint32(), done: make(chan struct{}),
		heard: time.Now()}
	s.Update(peer)
	go s.receive()
	go s.playout(ctx)
	go s.send(ctx)
	return s
}

// Update applies a new offer from the peer (a re-INVITE: hold, resume, a
// new address).
func (s *Session) Update(peer Media) {
	addr := peer.Addr
	s.peer.Store(&addr)
	s.hold.Store(peer.Hold)
}

// Frames delivers the caller's audio, 20 ms at a time in the codec, in
// order and in real time; it closes when the media ends.
func (s *Session) Frames() <-chan []byte { return s.frames }

// Digits delivers the DTMF digits the caller presses ("0"-"9", "*", "#",
// "A"-"D").
func (s *Session) Digits() <-chan rune { return s.digits }

// Done is closed when the media ended (Close, or the peer's RTP stopped
// for RTPTimeout).
func (s *Session) Done() <-chan struct{} { return s.done }

// Play queues the agent's audio (codec bytes) to be sent.
func (s *Session) Play(b []byte) {
	s.outMu.Lock()
	if s.head > 0 && len(s.out)+len(b) > cap(s.out) {
		// What was sent makes room, rather than growing the queue.
		s.out, s.head = s.out[:copy(s.out, s.out[s.head:])], 0
	}
	s.out = append(s.out, b...)
	s.outMu.Unlock()
}

// Queued is the audio not sent yet.
func (s *Session) Queued() time.Duration {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	return time.Duration(len(s.out)-s.head) * time.Second / 8000
}

// Flush drops the audio not sent yet (the caller barged in).
func (s *Session) Flush() {
	s.outMu.Lock()
	s.out, s.head = s.out[:0], 0
	s.outMu.Unlock()
}

// Stats returns the media quality so far.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.JitterMS = s.jitter / 8 // samples at 8 kHz to ms
	if s.delayN > 0 {
		st.DelayMS = float64(s.delaySum.Microseconds()) / 1000 / float64(s.delayN)
	}
	return st
}

// Close ends the media and frees its port.
func (s *Session) Close() {
	s.once.Do(func() {
		close(s.done)
		_ = s.conn.Close()
	})
}

// receive reads RTP until the socket closes.
func (s *Session) receive() {
	defer s.Close()
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		var p rtp.Packet
		if err := p.Unmarshal(buf[:n]); err != nil {
			continue
		}
		if peer := s.peer.Load(); peer != nil && from.Addr().Unmap() != peer.Addr().Unmap() {
			continue // not the call's peer
		}
		now := time.Now()
		switch p.PayloadType {
		case s.dtmf:
			if s.dtmf != 0 {
				s.event(p)
			}
		case s.codec.PayloadType:
			s.put(p, now)
		}
	}
}

// event tells a DTMF digit once, at the end of its RFC 4733 event.
func (s *Session) event(p rtp.Packet) {
	d, end, ok := ParseDTMF(p.Payload)
	s.mu.Lock()
	s.heard = time.Now()
	fresh := ok && end && p.Timestamp != s.lastDigit
	if fresh {
		s.lastDigit = p.Timestamp
	}
	s.mu.Unlock()
	if fresh {
		select {
		case s.digits <- d:
		default:
		}
	}
}

// ParseDTMF reads an RFC 4733 telephone-event payload: the digit, and
// whether this packet ends the event.
func ParseDTMF(b []byte) (digit rune, end, ok bool) {
	if len(b) < 4 {
		return 0, false, false
	}
	const digits = "0123456789*#ABCD"
	if int(b[0]) >= len(digits) {
		return 0, false, false
	}
	return rune(digits[b[0]]), b[1]&0x80 != 0, true
}

// put files an audio packet in the jitter buffer.
func (s *Session) put(p rtp.Packet, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heard = now
	s.stats.Received++
	// RFC 3550 interarrival jitter, in samples.
	if !s.lastArrive.IsZero() {
		arrival := float64(now.Sub(s.lastArrive).Seconds() * 8000)
		d := arrival - float64(int32(p.Timestamp-s.lastTS))
		if d < 0 {
			d = -d
		}
		s.jitter += (d - s.jitter) / 16
	}
	s.lastArrive, s.lastTS = now, p.Timestamp
	if !s.started && len(s.buf) == 0 {
		s.next = p.SequenceNumber
	}
	if s.started && int16(p.SequenceNumber-s.next) < 0 {
		s.stats.Late++ // its time was played already
		return
	}
	if int16(p.SequenceNumber-s.next) > 100 {
		// A jump (the peer restarted its stream): follow it.
		clear(s.buf)
		s.next, s.started = p.SequenceNumber, false
	}
	payload := append([]byte(nil), p.Payload...)
	s.buf[p.SequenceNumber] = &packet{payload: payload, arrived: now}
	// The playout delay follows the jitter: three times it plus a frame,
	// within the bounds.
	t := Ptime + time.Duration(3*s.jitter/8*float64(time.Millisecond))
	s.target = min(maxPlayout, max(minPlayout, t))
}

// playout hands the engine one frame every 20 ms: the next in sequence, or
// a concealed one when it is missing.
func (s *Session) playout(ctx context.Context) {
	defer close(s.frames)
	tick := time.NewTicker(Ptime)
	defer tick.Stop()
	quiet := silence(s.codec)
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.done:
			return
		case now := <-tick.C:
			frame, ok := s.pop(now, quiet)
			if !ok {
				continue
			}
			select {
			case s.frames <- frame:
			default: // the engine is behind: it drops, the clock does not
			}
		}
	}
}

// pop takes the frame due now; ok is false before playout starts.
func (s *Session) pop(now time.Time, quiet []byte) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.heard) > RTPTimeout {
		go s.Close()
		return nil, false
	}
	depth := time.Duration(len(s.buf)) * Ptime
	if !s.started {
		// Filling: play once the oldest packet waiting has waited the
		// target delay (the later ones then have that much slack).
		var oldest time.Time
		for _, p := range s.buf {
			if oldest.IsZero() || p.arrived.Before(oldest) {
				oldest = p.arrived
			}
		}
		if oldest.IsZero() || now.Sub(oldest) < s.target {
			return nil, false
		}
		s.started = true
	}
	if p, ok := s.buf[s.next]; ok {
		delete(s.buf, s.next)
		s.next++
		s.delaySum += now.Sub(p.arrived)
		s.delayN++
		s.last = p.payload
		// Far behind (a burst arrived at once, past the largest delay
		// the buffer allows): skip a frame to come back.
		if depth > maxPlayout+Ptime {
			if _, ok := s.buf[s.next]; ok {
				delete(s.buf, s.next)
				s.next++
			}
		}
		return p.payload, true
	}
	s.stats.Concealed++
	if len(s.buf) > 0 {
		// Lost: later packets are here. Play the last frame again
		// (once), then silence; move on.
		s.stats.Lost++
		s.next++
		if s.last != nil {
			frame := s.last
			s.last = nil
			return frame, true
		}
		return quiet, true
	}
	// Underrun: nothing to play. Silence keeps the engine's clock, and
	// the next packet to come is played from a full buffer again.
	s.started = false
	return quiet, true
}

// send paces the agent's audio out, 20 ms a packet; silence between
// replies keeps the stream (and NAT bindings) alive.
func (s *Session) send(ctx context.Context) {
	quiet := silence(s.codec)
	pkt := make([]byte, rtpHeaderBytes+frameBytes)
	next := time.Now()
	wait := time.NewTimer(Ptime)
	defer wait.Stop()
	for {
		next = next.Add(Ptime)
		if d := time.Until(next); d > 0 {
			wait.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-s.done:
				return
			case <-wait.C:
			}
		} else if d < -5*Ptime {
			next = time.Now() // fell far behind (a stall): restart the clock
		}
		s.outMu.Lock()
		n := min(len(s.out)-s.head, frameBytes)
		speech := n > 0
		// The packet is built in place: header, then 20 ms of the reply or
		// of silence (the reply's last frame padded with it).
		frame := pkt[rtpHeaderBytes:]
		copy(frame, s.out[s.head:s.head+n])
		copy(frame[n:], quiet[n:])
		if s.head += n; s.head == len(s.out) {
			s.out, s.head = s.out[:0], 0
		}
		s.outMu.Unlock()
		marker := speech && !s.speaking
		s.speaking = speech
		s.seq++
		s.ts += frameBytes
		if s.hold.Load() {
			continue
		}
		peer := s.peer.Load()
		if peer == nil {
			continue
		}
		h := rtp.Header{Version: 2, PayloadType: s.codec.PayloadType, SequenceNumber: s.seq, Timestamp: s.ts, SSRC: s.ssrc, Marker: marker}
		if _, err := h.MarshalTo(pkt[:rtpHeaderBytes]); err != nil {
			continue
		}
		b := pkt
		if _, err := s.conn.WriteToUDPAddrPort(b, *peer); err != nil && errors.Is(err, net.ErrClosed) {
			return
		}
	}
}
