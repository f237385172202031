package testenv

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Fault is a kind of failure a Faulty link injects.
type Fault string

// The faults every dependency is tested with.
const (
	// Latency delays every answer by the given milliseconds.
	Latency Fault = "latency"
	// Blackhole accepts the connection and never answers (a paused or
	// partitioned server).
	Blackhole Fault = "blackhole"
	// Reset answers every connection by resetting it.
	Reset Fault = "reset"
	// Trickle passes the answer a few bytes at a time, slowly.
	Trickle Fault = "trickle"
	// Refused stops listening: connections are refused.
	Refused Fault = "refused"
)

// Faults lists the faults in the order tests run them.
var Faults = []Fault{Latency, Blackhole, Reset, Trickle, Refused}

var (
	faultServerOnce sync.Once
	faultServer     *toxiproxy.ApiServer
)

func faultAPI() *toxiproxy.ApiServer {
	faultServerOnce.Do(func() {
		faultServer = toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	})
	return faultServer
}

// Faulty is a TCP link from a local address to a real dependency, through
// which a test injects faults (toxiproxy, in process).
type Faulty struct {
	t     testing.TB
	proxy *toxiproxy.Proxy
	name  string
	mu    sync.Mutex
	fault Fault
}

// FaultyLink starts a link to upstream (host:port) and returns it; Addr is
// where avb connects instead. The link closes when the test ends.
func FaultyLink(t testing.TB, name, upstream string) *Faulty {
	t.Helper()
	name = fmt.Sprintf("%s-%s", name, randomSuffix())
	p := toxiproxy.NewProxy(faultAPI(), name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatalf("start fault proxy to %s: %v", upstream, err)
	}
	f := &Faulty{t: t, proxy: p, name: name}
	t.Cleanup(func() { p.Stop() })
	return f
}

// Addr is the link's listen address (host:port).
func (f *Faulty) Addr() string { return f.proxy.Listen }

// Port is the link's listen port.
func (f *Faulty) Port() string {
	_, port, _ := net.SplitHostPort(f.proxy.Listen)
	return port
}

// Inject turns a fault on (one at a time; Heal removes it). For Latency,
// arg is the delay in milliseconds.
func (f *Faulty) Inject(fault Fault, arg int) {
	f.t.Helper()
	f.Heal()
	f.mu.Lock()
	defer f.mu.Unlock()
	var toxic string
	switch fault {
	case Latency:
		toxic = fmt.Sprintf(`{"name":"f","type":"latency","stream":"downstream","toxicity":1,"attributes":{"latency":%d,"jitter":0}}`, arg)
	case Blackhole:
		toxic = `{"name":"f","type":"timeout","stream":"downstream","toxicity":1,"attributes":{"timeout":0}}`
	case Reset:
		toxic = `{"name":"f","type":"reset_peer","stream":"downstream","toxicity":1,"attributes":{"timeout":0}}`
	case Trickle:
		toxic = `{"name":"f","type":"slicer","stream":"downstream","toxicity":1,"attributes":{"average_size":2,"size_variation":1,"delay":200000}}`
	case Refused:
		f.proxy.Stop()
		f.fault = fault
		return
	default:
		f.t.Fatalf("unknown fault %q", fault)
	}
	if _, err := f.proxy.Toxics.AddToxicJson(strings.NewReader(toxic)); err != nil {
		f.t.Fatalf("inject %s: %v", fault, err)
	}
	// Connections opened before the fault keep streaming through the
	// toxic too: toxiproxy applies toxics to live links.
	f.fault = fault
}

// Heal removes the fault; connections work again.
func (f *Faulty) Heal() {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch f.fault {
	case "":
		return
	case Refused:
		if err := f.proxy.Start(); err != nil {
			f.t.Errorf("restart fault proxy: %v", err)
		}
	default:
		// Removing a toxic waits for every link to let go of it, and a link
		// stuck writing to a peer that does not read never does: then the
		// proxy's connections are closed (the clients reconnect), which
		// frees the removal.
		done := make(chan struct{})
		go func() {
			defer close(done)
			f.proxy.Toxics.ResetToxics(context.Background())
		}()
		select {
		case <-done:
		case <-time.After(healWait):
			f.proxy.Stop()
			select {
			case <-done:
			case <-time.After(healWait):
				f.t.Errorf("the fault proxy is stuck removing its %s toxic", f.fault)
			}
			if err := f.proxy.Start(); err != nil {
				f.t.Errorf("restart fault proxy: %v", err)
			}
		}
	}
	f.fault = ""
}

// healWait bounds how long Heal waits for links to let go of a toxic.
const healWait = 3 * time.Second
