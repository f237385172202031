package devstack_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/internal/testenv"
)

// example is one ```sh block of the README that talks to the API.
type example struct {
	line   int    // where the block starts in README.md
	script string // its lines, as written
	curls  int    // the curl commands in it
	calls  int    // the `./bin/avb call` commands in it
}

// readmeExamples returns the README's shell blocks that run curl or
// `avb call`, in order. The others (make, loadtest, config) have their own
// tests.
func readmeExamples(t *testing.T, readme string) []example {
	t.Helper()
	var out []example
	var cur *example
	sc := bufio.NewScanner(strings.NewReader(readme))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && line == "```sh":
			cur = &example{line: n}
		case cur != nil && line == "```":
			cur.script = expectStatuses(cur.script)
			if cur.curls+cur.calls > 0 {
				out = append(out, *cur)
			}
			cur = nil
		case cur != nil:
			cur.script += line + "\n"
			if code, _, _ := strings.Cut(line, " #"); !strings.HasPrefix(strings.TrimSpace(line), "#") {
				cur.curls += len(curlCommand.FindAllString(code, -1))
				if strings.HasPrefix(code, "./bin/avb call ") {
					cur.calls++
				}
			}
		}
	}
	if cur != nil {
		t.Fatalf("README.md: the block at line %d never ends", cur.line)
	}
	return out
}

// expectStatus is a comment saying what the command above it answers.
var expectStatus = regexp.MustCompile(`^# HTTP (\d{3})\b`)

// expectStatuses marks each curl command followed by a "# HTTP 400: ..."
// comment, so the shim checks that it answers that status.
func expectStatuses(script string) string {
	lines := strings.Split(script, "\n")
	for i, l := range lines {
		m := expectStatus.FindStringSubmatch(l)
		if m == nil || i == 0 {
			continue
		}
		start := i - 1 // back to the first line of the command
		for start > 0 && strings.HasSuffix(lines[start-1], "\\") {
			start--
		}
		if strings.HasPrefix(lines[start], "curl ") {
			lines[start] = "AVB_EXPECT=" + m[1] + " " + lines[start]
		}
	}
	return strings.Join(lines, "\n")
}

// curlCommand finds curl commands (also buf curl) where a shell would run them.
var curlCommand = regexp.MustCompile(`(^|\$\(|\|\s*|;\s*|&&\s*)\s*(\./bin/buf\s+)?curl\s`)

// exports reads the `export NAME=value` lines avb dev printed for the developer.
func exports(out string) map[string]string {
	env := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s*export (AVB_[A-Z_]+)=(\S+)$`).FindAllStringSubmatch(out, -1) {
		env[m[1]] = m[2]
	}
	return env
}

// players stand in for aplay and play, which have no sound device in a
// test: the reply they would play must be a WAV file with sound in it.
const players = `
aplay() { local f="${@: -1}"; [[ $(head -c 4 "$f") == RIFF && $(stat -c %s "$f") -gt 8000 ]] && echo "(plays $f)"; }
play() { aplay "$@"; }
`

// curlShim makes every curl of an example fail on an HTTP error (or on a
// status other than the one the README shows), bounds its time, and counts
// it; a streaming curl (-N) runs for a few seconds and must not have ended
// with an error message.
const curlShim = `
set -euo pipefail
curl() {
  local stream=0 rc=0 a
  for a in "$@"; do [[ $a == -[a-zA-Z]*N* ]] && stream=1; done
  if (( stream )); then
    local tmp; tmp=$(mktemp)
    command curl --max-time 3 "$@" >"$tmp" || rc=$?
    cat "$tmp"
    if [[ $rc == 28 ]] && [[ -s $tmp ]] && ! grep -aq '"error"' "$tmp"; then rc=0; fi
    rm -f "$tmp"
  elif [[ -n ${AVB_EXPECT:-} ]]; then
    local tmp code; tmp=$(mktemp)
    code=$(command curl --max-time 60 -o "$tmp" -w '%{http_code}' "$@") || rc=$?
    cat "$tmp"; echo
    rm -f "$tmp"
    if [[ $rc == 0 && $code != "$AVB_EXPECT" ]]; then echo "HTTP $code, the README shows $AVB_EXPECT" >&2; rc=1; fi
  else
    command curl --fail-with-body --max-time 60 "$@" || rc=$?
  fi
  echo "$rc $*" | sed -E 's/(Bearer|X-API-Key:) [^ ]+/\1 .../g' >>"$AVB_CURL_LOG"
  return $rc
}
`

// runExamples runs the README's curl and avb call examples, in order and in
// one shell (a later example uses what an earlier one set), against the dev
// stack at base, with the credentials avb dev printed. It returns how many
// curl commands ran.
func runExamples(t *testing.T, base, devOutput string) int {
	t.Helper()
	for _, tool := range []string{"bash", "curl", "jq", "base64", "espeak-ng"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: run  apt-get install -y curl jq espeak-ng  (make test does)", tool)
		}
	}
	root := testenv.RepoRoot()
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	examples := readmeExamples(t, string(readme))
	creds := exports(devOutput)
	for _, k := range []string{"AVB_API_KEY", "AVB_TOKEN", "AVB_SYSADMIN_TOKEN"} {
		if creds[k] == "" {
			t.Fatalf("avb dev did not print export %s=...:\n%s", k, devOutput)
		}
	}
	host := strings.TrimPrefix(base, "http://")
	work := t.TempDir()
	log := filepath.Join(work, "curl.log")
	want, calls := 0, 0
	var script strings.Builder
	script.WriteString(curlShim)
	script.WriteString(players)
	for _, ex := range examples {
		fmt.Fprintf(&script, "echo '>>> README.md:%d'\n", ex.line)
		script.WriteString(strings.ReplaceAll(ex.script, "localhost:8080", host))
		want += ex.curls
		calls += ex.calls
	}
	if calls == 0 {
		t.Fatal("the README has no `./bin/avb call` example")
	}
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Dir = work // files the examples write stay in the test's directory
	cmd.Env = append(os.Environ(), "AVB_CURL_LOG="+log, "PATH="+filepath.Join(root, "bin")+":"+os.Getenv("PATH"))
	for k, v := range creds {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// The examples say ./bin/buf and ./bin/avb, as a reader at the
	// repository root would after make dev.
	if err := os.Mkdir(filepath.Join(work, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "bin", "buf"), filepath.Join(work, "bin", "buf")); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(work, "bin", "avb"), "./cmd/avb")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build avb: %v\n%s", err, out)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	ran, _ := os.ReadFile(log)
	t.Logf("README examples (%s):\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("a README example failed (%v); the last '>>> README.md:N' above is its block; curl exit codes:\n%s", err, ran)
	}
	curls := strings.Count(string(ran), "\n")
	if buf := strings.Count(script.String(), "./bin/buf curl"); curls+buf != want {
		t.Fatalf("%d curl and %d buf curl commands ran, the README has %d", curls, buf, want)
	}
	rpcs := map[string]bool{}
	for _, m := range regexp.MustCompile(`avb\.v1\.[A-Za-z]+Service/[A-Za-z]+`).FindAllString(script.String(), -1) {
		rpcs[m] = true
	}
	t.Logf("the README's curl examples call %d RPCs by name (and more by REST route); %d avb call ran", len(rpcs), calls)
	return want
}

func TestReadmeExamplesAreFound(t *testing.T) {
	readme := "intro\n```sh\nmake dev\n```\n```sh\n# a comment with curl in it\ncurl -s localhost:8080/health/\n" +
		"X=$(curl -s a | jq .b)  # curl inside a comment\n./bin/buf curl --list-methods x\n./bin/avb call --in a.wav\n" +
		"curl -s -d '{}' \\\n  localhost:8080/bad\n# HTTP 400: {\"code\":...}\n```\n"
	got := readmeExamples(t, readme)
	if len(got) != 1 || got[0].line != 5 || got[0].curls != 4 || got[0].calls != 1 {
		t.Fatalf("found %+v", got)
	}
	if !strings.Contains(got[0].script, "\nAVB_EXPECT=400 curl -s -d '{}' \\\n  localhost:8080/bad\n") {
		t.Fatalf("the expected status is not marked:\n%s", got[0].script)
	}
	env := exports("  API key:\n    export AVB_API_KEY=avb_x\n  token:\n    export AVB_TOKEN=eyJ.a.b\n")
	if env["AVB_API_KEY"] != "avb_x" || env["AVB_TOKEN"] != "eyJ.a.b" {
		t.Fatalf("exports %v", env)
	}
}
