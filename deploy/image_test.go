// Package deploy checks what ships in deploy/ with the parsers of each
// ecosystem: the Dockerfile with BuildKit's, and (alongside) compose,
// Kubernetes and monitoring files with theirs. Its own Go module keeps
// those parsers out of avb's build.
package deploy

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// imageUID is the user the image runs as; cmd/avb's TestRunsAsTheImageDoes
// runs the binary as this user.
const imageUID = "10001"

func stages(t *testing.T) []instructions.Stage {
	t.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("parse the Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile: %s", w.Short)
	}
	st, _, err := instructions.Parse(res.AST, nil)
	if err != nil {
		t.Fatalf("the Dockerfile's instructions: %v", err)
	}
	return st
}

// The image is multi-stage, builds avb with cgo against the speech
// libraries, and runs it on a slim Debian as a fixed non-root user, with a
// health check on /health/ (avb health), SIGTERM to stop, version labels,
// and the one binary as entrypoint (serve by default).
func TestDockerfileRules(t *testing.T) {
	st := stages(t)
	if len(st) < 3 {
		t.Fatalf("%d stages; want the web build, the Go build and the runtime", len(st))
	}
	build, run := st[len(st)-2], st[len(st)-1]
	buildText := commands(build)
	for _, want := range []string{"libpocketsphinx-dev", "libespeak-ng-dev", "CGO_ENABLED=1", "-trimpath", "app.Version=${VERSION}", "./cmd/avb"} {
		if !strings.Contains(buildText, want) {
			t.Errorf("the build stage does not %q", want)
		}
	}
	if !strings.Contains(run.BaseName, "-slim") || !strings.HasPrefix(run.BaseName, "debian:") {
		t.Errorf("runtime base %q is not a slim Debian", run.BaseName)
	}
	runText := commands(run)
	for _, want := range []string{"libpocketsphinx3", "libespeak-ng1", "pocketsphinx-en-us", "ca-certificates", "--uid " + imageUID, "rm -rf /var/lib/apt/lists/*"} {
		if !strings.Contains(runText, want) {
			t.Errorf("the runtime stage lacks %q", want)
		}
	}
	for _, dev := range []string{"-dev ", "golang", "build-essential", "gcc"} {
		if strings.Contains(runText, dev) {
			t.Errorf("the runtime stage installs build tools (%q)", dev)
		}
	}
	var user, stop string
	var health *instructions.HealthCheckCommand
	var entry *instructions.EntrypointCommand
	var cmd *instructions.CmdCommand
	labels := map[string]string{}
	for _, c := range run.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.StopSignalCommand:
			stop = c.Signal
		case *instructions.HealthCheckCommand:
			health = c
		case *instructions.EntrypointCommand:
			entry = c
		case *instructions.CmdCommand:
			cmd = c
		case *instructions.LabelCommand:
			for _, kv := range c.Labels {
				labels[kv.Key] = kv.Value
			}
		}
	}
	if user != imageUID+":"+imageUID {
		t.Errorf("USER %q, want %s:%s (fixed, non-root)", user, imageUID, imageUID)
	}
	if stop != "SIGTERM" {
		t.Errorf("STOPSIGNAL %q", stop)
	}
	if health == nil || !slices.Equal(health.Health.Test, []string{"CMD", "avb", "health"}) || health.Health.Interval == 0 || health.Health.Timeout == 0 {
		t.Errorf("HEALTHCHECK %+v, want CMD avb health with an interval and a timeout", health)
	}
	if entry == nil || !slices.Equal(entry.CmdLine, []string{"avb"}) || cmd == nil || !slices.Equal(cmd.CmdLine, []string{"serve"}) {
		t.Errorf("ENTRYPOINT %+v CMD %+v, want [avb] [serve]", entry, cmd)
	}
	for _, l := range []string{"org.opencontainers.image.version", "org.opencontainers.image.source", "org.opencontainers.image.title"} {
		if labels[l] == "" {
			t.Errorf("label %s missing", l)
		}
	}
}

// commands is a stage's RUN and ENV instructions as text.
func commands(s instructions.Stage) string {
	var b strings.Builder
	for _, c := range s.Commands {
		switch c := c.(type) {
		case *instructions.RunCommand:
			b.WriteString(strings.Join(c.CmdLine, " ") + "\n")
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				b.WriteString(kv.Key + "=" + kv.Value + "\n")
			}
		}
	}
	return b.String()
}

// The image builds with the Go the module asks for (or newer).
func TestDockerfileGoVersion(t *testing.T) {
	mod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	docker, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var want, got string
	for line := range strings.Lines(string(mod)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go "); ok {
			want = v
		}
	}
	for line := range strings.Lines(string(docker)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "ARG GO_VERSION="); ok {
			got = v
		}
	}
	if want == "" || got == "" || semver(got) < semver(want) {
		t.Fatalf("the Dockerfile builds with Go %q, go.mod asks for %q", got, want)
	}
}

// semver makes a Go version comparable as text ("1.26.8" -> "001.026.008").
func semver(v string) string {
	parts := strings.Split(v, ".")
	for len(parts) < 3 {
		parts = append(parts, "0")
	}
	for i, p := range parts {
		parts[i] = strings.Repeat("0", max(0, 3-len(p))) + p
	}
	return strings.Join(parts, ".")
}
