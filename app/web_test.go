package app_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/platform/signature"
	"github.com/agentvoicebox/avb/store"
)

// repoRoot is the repository (the tests run in app/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// builtWeb fails unless `make web` has built the SDK, its tests and the console.
func builtWeb(t *testing.T, files ...string) string {
	t.Helper()
	root := repoRoot(t)
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is missing: run  apt-get install -y nodejs npm  (make test does)")
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatalf("%s is not built: run  make web  (make test does)", f)
		}
	}
	return root
}

// nodeTestTimeout bounds one node test run.
const nodeTestTimeout = 3 * time.Minute

// runNodeTests runs node's test runner on file with env, logging its report.
func runNodeTests(t *testing.T, root, file string, env map[string]string) {
	t.Helper()
	// A node run that hangs (a call that never answers) fails the test
	// instead of holding the suite.
	ctx, cancel := context.WithTimeout(context.Background(), nodeTestTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "--test", "--test-reporter=spec", file)
	cmd.WaitDelay = 5 * time.Second
	cmd.Dir = root
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("node --test %s (%s):\n%s", file, time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("node tests failed: %v", err)
	}
}

// speechFiles writes the test sentence spoken by espeak-ng as raw 16 kHz
// PCM16 and as a WAV file (the browser's fake microphone).
func speechFiles(t *testing.T) (pcmPath, wavPath string) {
	t.Helper()
	pcm := spoken(t, ask, 1500)
	dir := t.TempDir()
	pcmPath, wavPath = filepath.Join(dir, "ask.pcm"), filepath.Join(dir, "ask.wav")
	if err := os.WriteFile(pcmPath, pcm, 0o644); err != nil {
		t.Fatal(err)
	}
	var wav bytes.Buffer
	le := func(v any) { _ = binary.Write(&wav, binary.LittleEndian, v) }
	wav.WriteString("RIFF")
	le(uint32(36 + len(pcm)))
	wav.WriteString("WAVEfmt ")
	le(uint32(16))
	le(uint16(1))         // PCM
	le(uint16(1))         // mono
	le(uint32(16000))     // sample rate
	le(uint32(16000 * 2)) // byte rate
	le(uint16(2))         // block align
	le(uint16(16))        // bits per sample
	wav.WriteString("data")
	le(uint32(len(pcm)))
	wav.Write(pcm)
	if err := os.WriteFile(wavPath, wav.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return pcmPath, wavPath
}

// The TypeScript SDK's tests (node's test runner) against a live server:
// create and page projects, error reasons, the Subscribe stream and a call
// on the browser voice path.
func TestTypeScriptSDK(t *testing.T) {
	t.Parallel()
	root := builtWeb(t, "sdk/ts/dist-test/sdk.test.mjs")
	p := newPlatform(t)
	ten := p.tenant("typescript", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"sdk","scopes":["API_KEY_SCOPE_ADMIN","API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))
	pcm, _ := speechFiles(t)
	runNodeTests(t, root, "sdk/ts/dist-test/sdk.test.mjs", map[string]string{
		"AVB_BASE_URL":     p.base,
		"AVB_ADMIN_TOKEN":  admin,
		"AVB_VIEWER_TOKEN": p.token("vic", ten.ID.String(), "viewer"),
		"AVB_API_KEY":      str(key, "secret"),
		"AVB_SPEECH_PCM":   pcm,
		"AVB_ASK":          ask,
	})
}

// The web console in headless Chromium (playwright-core): sign in with an
// API key, pick a project and call the agent from a fake microphone fed by
// an espeak-ng WAV file; the transcript appears and the reply plays.
func TestConsoleInChromium(t *testing.T) {
	t.Parallel()
	root := builtWeb(t, "web/dist-test/console.test.mjs", "web/dist/console/app.js")
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is missing: run  apt-get install -y chromium  (.ci/run does)")
	}
	// Calls run as session workflows, as in `make dev`: their end reaches
	// the console's event stream and their usage the ledger.
	p, _ := newWorkflowPlatform(t)
	ten := p.tenant("console", store.TierPro)
	admin := p.token("ada", ten.ID.String(), "admin")
	key := wantOK(t, p.call("/avb.v1.ApiKeyService/CreateApiKey", `{"name":"console","scopes":["API_KEY_SCOPE_ADMIN","API_KEY_SCOPE_REALTIME"]}`, bearer(admin)...))
	_, wav := speechFiles(t)
	// The console signs in through the issuer's code flow, back to itself.
	p.issuer.RedirectPrefixes = []string{p.base + "/console/"}
	// Each page is photographed into test-output/console, to review how a
	// change looks.
	shots := filepath.Join(root, "test-output", "console")
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("console screenshots: %s", shots)
	viewer := p.token("vic", ten.ID.String(), "viewer")
	viewerID := str(wantOK(t, p.call("/avb.v1.UserService/GetMe", "{}", bearer(viewer)...))["user"].(map[string]any), "id")
	runNodeTests(t, root, "web/dist-test/console.test.mjs", map[string]string{
		"AVB_AXE":          filepath.Join(root, "node_modules", "axe-core", "axe.min.js"),
		"AVB_VIEWER_TOKEN": viewer,
		"AVB_VIEWER_ID":    viewerID,
		"AVB_SCREENSHOTS":  shots,
		"AVB_TENANT_ID":    ten.ID.String(),
		"AVB_TENANT":       ten.Name,
		"AVB_BASE_URL":     p.base,
		"AVB_API_KEY":      str(key, "secret"),
		"AVB_SPEECH_WAV":   wav,
		"AVB_ASK":          ask,
		"AVB_CHROMIUM":     chromium,
	})
}

// The docs page and the console are served from the binary, with no
// outside address in them (they work offline).
func TestDocsAndConsoleAreServedOffline(t *testing.T) {
	t.Parallel()
	builtWeb(t, "web/dist/docs/index.html", "web/dist/console/index.html")
	p := newPlatform(t)
	for path, want := range map[string]string{
		"/docs/":                     "swagger-ui-bundle.js",
		"/docs/init.js":              "/openapi.yaml",
		"/docs/swagger-ui-bundle.js": "SwaggerUIBundle",
		"/console/":                  "app.js",
		"/console/app.js":            "avb.credential",
	} {
		res, err := http.Get(p.base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("%s: %d, %d bytes, no %q", path, res.StatusCode, len(body), want)
		}
		if strings.HasSuffix(path, "/") && (strings.Contains(string(body), "http://") || strings.Contains(string(body), "https://")) {
			t.Fatalf("%s loads something from elsewhere", path)
		}
	}
	res, err := http.Get(p.base + "/docs")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Request.URL.Path != "/docs/" {
		t.Fatalf("/docs went to %s", res.Request.URL.Path)
	}
}

// The TypeScript webhook verifier (sdk/ts) against signatures avb made: the
// README's receiver accepts a call once, and refuses it tampered, replayed,
// expired or signed with another secret.
func TestTypeScriptWebhookVerifier(t *testing.T) {
	t.Parallel()
	root := builtWeb(t, "sdk/ts/dist-test/webhook.test.mjs")
	const secret = "whsec_fixture_secret"
	body := `{"type":"tool_call","session_id":"s1","call_id":"call_1","name":"book_meeting","arguments":{"day":"tomorrow","time":"10:00"}}`
	now := time.Now()
	fixtures, _ := json.Marshal(map[string]string{
		"secret": secret, "body": body,
		"header":        signature.Sign([]byte(body), now, secret),
		"oldHeader":     signature.Sign([]byte(body), now.Add(-10*time.Minute), secret),
		"rotatedHeader": signature.Sign([]byte(body), now.Add(-time.Second), "whsec_next", secret),
	})
	file := filepath.Join(t.TempDir(), "fixtures.json")
	if err := os.WriteFile(file, fixtures, 0o600); err != nil {
		t.Fatal(err)
	}
	runNodeTests(t, root, "sdk/ts/dist-test/webhook.test.mjs", map[string]string{"AVB_WEBHOOK_FIXTURES": file})
}
