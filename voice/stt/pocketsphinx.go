package stt

/*
#cgo pkg-config: pocketsphinx sphinxbase
#include <stdlib.h>
#include <pocketsphinx.h>
#include <sphinxbase/err.h>

// avb_ps_quiet turns pocketsphinx's logging off, once for the process. A
// per-decoder -logfn would swap the process-wide log file under decoders
// that are writing to it.
static void avb_ps_quiet(void) { err_set_logfp(NULL); }

// avb_ps_new makes a decoder; lm NULL makes a grammar decoder, without the
// language model. A grammar decoder scores every other frame (-ds 2) with
// the two best Gaussians (-topn 2): half the CPU per utterance
// (BenchmarkGrammarDecode: 24 ms -> 12.6 ms for 2 s of speech), and a
// grammar of a few phrases is recognized as well (every recognition test
// passes unchanged, 8 kHz mu-law included).
static ps_decoder_t *avb_ps_new(const char *hmm, const char *dict, const char *lm) {
	cmd_ln_t *cfg = lm == NULL
		? cmd_ln_init(NULL, ps_args(), TRUE, "-hmm", hmm, "-dict", dict, "-ds", "2", "-topn", "2", NULL)
		: cmd_ln_init(NULL, ps_args(), TRUE, "-hmm", hmm, "-dict", dict, "-lm", lm, NULL);
	if (cfg == NULL) return NULL;
	return ps_init(cfg);
}
*/
import "C"

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// libMu serializes making and freeing decoders, and quiet turns logging off
// first: pocketsphinx keeps process-wide state there, and concurrent
// decoder starts that each set a log file aborted the process (free():
// invalid pointer). Decoding itself runs in parallel.
var (
	libMu sync.Mutex
	quiet sync.Once
)

func free(ps *C.ps_decoder_t) {
	libMu.Lock()
	defer libMu.Unlock()
	C.ps_free(ps)
}

// Model paths of Debian's pocketsphinx-en-us package.
const (
	DefaultModelDir = "/usr/share/pocketsphinx/model/en-us"
)

// Pocketsphinx is CMU pocketsphinx in process. Decoders cost about 200 ms
// to create, so they are pooled per grammar and reused across utterances.
type Pocketsphinx struct {
	modelDir string
	maxIdle  int

	mu      sync.Mutex
	idle    map[string][]*decoder // by grammar key ("" = language model)
	warming map[string]int        // decoders being made ahead of need
	// expect counts the calls opened (Prepare) that have not started
	// recognizing, lately (expectAt).
	expect   map[string]int
	expectAt map[string]time.Time
	// inUse counts a grammar's decoders out of the pool; peak is the most
	// out at once lately (it decays by a quarter a minute, peakAt), and
	// the pool keeps that many: under load, no decoder is freed only to
	// be made again (making one holds the library's lock ~25 ms).
	inUse  map[string]int
	peak   map[string]int
	peakAt map[string]time.Time
}

// NewPocketsphinx returns a transcriber using the models in modelDir.
func NewPocketsphinx(modelDir string, maxIdlePerGrammar int) *Pocketsphinx {
	if modelDir == "" {
		modelDir = DefaultModelDir
	}
	return &Pocketsphinx{modelDir: modelDir, maxIdle: maxIdlePerGrammar, idle: map[string][]*decoder{}, warming: map[string]int{},
		expect: map[string]int{}, expectAt: map[string]time.Time{}, inUse: map[string]int{}, peak: map[string]int{}, peakAt: map[string]time.Time{}}
}

type decoder struct {
	ps      *C.ps_decoder_t
	grammar string
}

var word = regexp.MustCompile(`[a-z']+`)

// grammar turns phrase hints into a JSGF grammar: one alternative a phrase,
// normalized to the dictionary's lower-case words.
func grammar(phrases []string) string {
	var alts []string
	for _, p := range phrases {
		if w := word.FindAllString(strings.ToLower(p), -1); len(w) > 0 {
			alts = append(alts, strings.Join(w, " "))
		}
	}
	if len(alts) == 0 {
		return ""
	}
	sort.Strings(alts)
	return "#JSGF V1.0;\ngrammar hints;\npublic <utterance> = " + strings.Join(alts, " | ") + ";\n"
}

// taken counts a decoder of g out of the pool (p.mu held).
func (p *Pocketsphinx) taken(g string) {
	p.inUse[g]++
	if p.inUse[g] > p.peak[g] {
		p.peak[g], p.peakAt[g] = p.inUse[g], time.Now()
	}
}

// keep is how many decoders of g the pool holds, in use and idle (p.mu held).
func (p *Pocketsphinx) keep(g string) int {
	if since := time.Since(p.peakAt[g]); since > time.Minute {
		p.peak[g] = max(p.inUse[g], p.peak[g]-p.peak[g]/4-1)
		p.peakAt[g] = time.Now()
	}
	return max(p.maxIdle, p.peak[g])
}

// acquire takes a decoder of g from the pool, or makes one; a call's
// start (forCall) is one fewer opened call waiting for its first.
func (p *Pocketsphinx) acquire(g string, forCall bool) (*decoder, error) {
	p.mu.Lock()
	if forCall && p.expect[g] > 0 {
		p.expect[g]--
	}
	if list := p.idle[g]; len(list) > 0 {
		d := list[len(list)-1]
		p.idle[g] = list[:len(list)-1]
		p.taken(g)
		p.mu.Unlock()
		return d, nil
	}
	p.mu.Unlock()
	d, err := p.newDecoder(g)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.taken(g)
	p.mu.Unlock()
	return d, nil
}

// newDecoder makes a decoder for grammar g ("": the language model).
func (p *Pocketsphinx) newDecoder(g string) (*decoder, error) {
	// A grammar decoder needs neither the language model nor the 134,000
	// word dictionary: with only the grammar's words it starts in ~25 ms and
	// takes ~6 MB, against ~700 ms and ~90 MB with both.
	dictPath, lm := p.modelDir+"/cmudict-en-us.dict", (*C.char)(nil)
	if g == "" {
		lm = C.CString(p.modelDir + "/en-us.lm.bin")
		defer C.free(unsafe.Pointer(lm))
	} else {
		var err error
		if dictPath, err = p.grammarDict(g); err != nil {
			return nil, err
		}
	}
	hmm := C.CString(p.modelDir + "/en-us")
	dict := C.CString(dictPath)
	defer C.free(unsafe.Pointer(hmm))
	defer C.free(unsafe.Pointer(dict))
	quiet.Do(func() { C.avb_ps_quiet() })
	libMu.Lock()
	ps := C.avb_ps_new(hmm, dict, lm)
	libMu.Unlock()
	if ps == nil {
		return nil, fmt.Errorf("stt: pocketsphinx could not load models from %s (apt-get install pocketsphinx-en-us)", p.modelDir)
	}
	d := &decoder{ps: ps, grammar: g}
	if g != "" {
		name, js := C.CString("hints"), C.CString(g)
		defer C.free(unsafe.Pointer(name))
		defer C.free(unsafe.Pointer(js))
		if C.ps_set_jsgf_string(ps, name, js) != 0 || C.ps_set_search(ps, name) != 0 {
			free(ps)
			return nil, errors.New("stt: phrase hints use words pocketsphinx does not know")
		}
	}
	return d, nil
}

// grammarDict returns a dictionary file holding the pronunciations of the
// grammar's words only, written once per grammar in the temp directory.
func (p *Pocketsphinx) grammarDict(g string) (string, error) {
	sum := sha256.Sum256([]byte(p.modelDir + "\x00" + g))
	path := filepath.Join(os.TempDir(), fmt.Sprintf("avb-pocketsphinx-%x.dict", sum[:12]))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	want := map[string]bool{}
	for _, w := range word.FindAllString(g[strings.Index(g, "=")+1:], -1) {
		want[w] = true
	}
	full, err := os.Open(p.modelDir + "/cmudict-en-us.dict")
	if err != nil {
		return "", fmt.Errorf("stt: pocketsphinx dictionary: %w (apt-get install pocketsphinx-en-us)", err)
	}
	defer full.Close()
	var out bytes.Buffer
	sc := bufio.NewScanner(full)
	for sc.Scan() {
		line := sc.Text()
		entry, _, _ := strings.Cut(line, " ")
		base, _, _ := strings.Cut(entry, "(") // alternates: "ten(2)"
		if want[base] {
			out.WriteString(line)
			out.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("stt: pocketsphinx dictionary: %w", err)
	}
	tmp, err := os.CreateTemp(os.TempDir(), "avb-pocketsphinx-*.tmp")
	if err != nil {
		return "", err
	}
	if _, err := tmp.Write(out.Bytes()); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	return path, os.Rename(tmp.Name(), path) // atomic: concurrent writers agree
}

func (p *Pocketsphinx) release(d *decoder) {
	p.mu.Lock()
	g := d.grammar
	p.inUse[g]--
	if len(p.idle[g])+p.inUse[g] >= p.keep(g) {
		p.mu.Unlock()
		free(d.ps) // outside p.mu: others take and return decoders meanwhile
		return
	}
	p.idle[g] = append(p.idle[g], d)
	p.mu.Unlock()
}

// Prepare is told a call that will need a decoder for phrases has opened,
// and makes one in the background unless the idle and the ones being made
// already cover the calls opened lately (the last 30 s) that have not
// started recognizing yet. When many calls open at once, their decoders
// are made while the callers speak, not when their turns end.
func (p *Pocketsphinx) Prepare(phrases []string) {
	g := grammar(phrases)
	p.mu.Lock()
	if time.Since(p.expectAt[g]) > 30*time.Second {
		p.expect[g] = 0 // calls that never spoke: forgotten
	}
	p.expect[g]++
	p.expectAt[g] = time.Now()
	if len(p.idle[g])+p.warming[g] >= p.expect[g] {
		p.mu.Unlock()
		return
	}
	p.warming[g]++
	p.mu.Unlock()
	go func() {
		d, err := p.newDecoder(g)
		if err != nil {
			p.mu.Lock()
			p.warming[g]--
			p.mu.Unlock()
			return
		}
		p.mu.Lock()
		p.warming[g]--
		if len(p.idle[g]) < max(p.expect[g], p.keep(g)) {
			p.idle[g] = append(p.idle[g], d)
			d = nil
		}
		p.mu.Unlock()
		if d != nil {
			free(d.ps) // the calls it was made for started meanwhile
		}
	}()
}

// Warm creates a decoder for phrases ahead of the first call.
func (p *Pocketsphinx) Warm(phrases []string) error {
	d, err := p.acquire(grammar(phrases), false)
	if err != nil {
		return err
	}
	p.release(d)
	return nil
}

// Start implements Transcriber.
func (p *Pocketsphinx) Start(_ context.Context, opts Options) (Session, error) {
	d, err := p.acquire(grammar(opts.Phrases), true)
	if err != nil {
		return nil, err
	}
	if C.ps_start_utt(d.ps) != 0 {
		p.release(d)
		return nil, errors.New("stt: pocketsphinx could not start an utterance")
	}
	return &psSession{p: p, d: d}, nil
}

type psSession struct {
	p    *Pocketsphinx
	d    *decoder
	done bool
}

func (s *psSession) Write(samples []int16) error {
	if s.done {
		return errors.New("stt: session finished")
	}
	if len(samples) == 0 {
		return nil
	}
	if C.ps_process_raw(s.d.ps, (*C.int16)(unsafe.Pointer(&samples[0])), C.size_t(len(samples)), 0, 0) < 0 {
		return errors.New("stt: pocketsphinx failed to process audio")
	}
	return nil
}

func (s *psSession) hyp() string {
	var score C.int32
	h := C.ps_get_hyp(s.d.ps, &score)
	if h == nil {
		return ""
	}
	return C.GoString(h)
}

func (s *psSession) Partial() string {
	if s.done {
		return ""
	}
	return s.hyp()
}

func (s *psSession) Finish() (string, error) {
	if s.done {
		return "", errors.New("stt: session finished")
	}
	s.done = true
	C.ps_end_utt(s.d.ps)
	text := s.hyp()
	s.p.release(s.d)
	return text, nil
}

func (s *psSession) Close() {
	if s.done {
		return
	}
	s.done = true
	C.ps_end_utt(s.d.ps)
	s.p.release(s.d)
}
