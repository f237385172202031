package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentvoicebox/avb/internal/testenv"
)

// imageUID is the user deploy/Dockerfile runs avb as (the deploy module's
// tests check the Dockerfile says so).
const imageUID = 10001

// The binary the image ships, built with the image's flags, serves as a
// non-root user from a read-only directory with nothing writable but what
// it is given: its health command (the image's HEALTHCHECK) passes, and
// SIGTERM (the image's STOPSIGNAL) stops it cleanly.
func TestRunsAsTheImageDoes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "avb")
	// (The image also builds with -trimpath, which only changes the file
	// names the binary records, and would cost this test a full rebuild.)
	build := exec.Command("go", "build", "-ldflags", "-s -w -X github.com/agentvoicebox/avb/app.Version=image-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build avb as the image does: %v\n%s", err, out)
	}
	// Read-only for everyone, the directory above it traversable.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o555); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o755); _ = os.Chmod(filepath.Dir(dir), 0o755) })
	port := testenv.FreePort(t)
	env := []string{"AVB_PROFILE=test", fmt.Sprintf("AVB_HTTP_ADDR=127.0.0.1:%d", port), "AVB_LOG_FORMAT=json",
		"AVB_REDIS_URL=" + testenv.RedisURL(t), "AVB_OIDC_ISSUER_URL=http://127.0.0.1:1/realms/avb", "PATH=/usr/bin:/bin"}
	asImageUser := func(c *exec.Cmd) {
		c.Dir, c.Env = dir, env
		if os.Geteuid() == 0 {
			c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: imageUID, Gid: imageUID}}
		}
	}
	serve := exec.Command(bin, "serve")
	asImageUser(serve)
	logs := &testenv.LogBuffer{}
	serve.Stdout, serve.Stderr = logs, logs
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve.Wait() }()
	t.Cleanup(func() { _ = serve.Process.Kill() })

	deadline := time.Now().Add(20 * time.Second)
	for {
		health := exec.Command(bin, "health", "--timeout", "1s")
		asImageUser(health)
		out, err := health.CombinedOutput()
		if err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("avb serve exited (%v) as uid %d in a read-only directory:\n%s", err, imageUID, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("avb health never passed: %v %s\n%s", err, out, logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := serve.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("avb serve did not stop cleanly on SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("avb serve still running 15 s after SIGTERM:\n%s", logs.String())
	}
}

// The health command probes the address the environment gives the server.
func TestLocalHealthURL(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		env  map[string]string
		want string
	}{
		{nil, "http://127.0.0.1:8080/health/"},
		{map[string]string{"AVB_HTTP_ADDR": ":9090"}, "http://127.0.0.1:9090/health/"},
		{map[string]string{"AVB_HTTP_ADDR": "10.0.0.5:8443", "AVB_VAULT_PKI_ROLE": "avb-server"}, "https://10.0.0.5:8443/health/"},
		{map[string]string{"AVB_HTTP_ADDR": "[::]:8080", "AVB_TLS_CERT_FILE": "/tls/cert.pem"}, "https://127.0.0.1:8080/health/"},
	} {
		if got := localHealthURL(func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("%v: %s, want %s", c.env, got, c.want)
		}
	}
}

// avb worker answers its liveness probe and serves its metrics on
// AVB_WORKER_ADDR while its Temporal workers run, and stops on SIGTERM.
func TestWorkerHealthAndMetrics(t *testing.T) {
	t.Parallel()
	bin := buildAVB(t)
	owner := testenv.Postgres(t)
	port := testenv.FreePort(t)
	w := exec.Command(bin, "worker")
	w.Env = append(cleanEnv(), "AVB_PROFILE=test", "AVB_DATABASE_URL="+owner, "AVB_REDIS_URL="+testenv.RedisURL(t),
		"AVB_TEMPORAL_ADDRESS="+testenv.Temporal(t), fmt.Sprintf("AVB_TEMPORAL_QUEUE_PREFIX=w%d-", port),
		fmt.Sprintf("AVB_WORKER_ADDR=127.0.0.1:%d", port))
	logs := &testenv.LogBuffer{}
	w.Stdout, w.Stderr = logs, logs
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Wait() }()
	t.Cleanup(func() { _ = w.Process.Kill() })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(base + "/health/")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("avb worker exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker /health/ never answered:\n%s", logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(body), "avb_billing_sync_failing_tenants") && !strings.Contains(string(body), "billing_sync_failing") {
		t.Fatalf("worker metrics lack the billing sync gauge:\n%.2000s", body)
	}
	_ = w.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("worker did not stop cleanly: %v\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("worker still running 20 s after SIGTERM")
	}
}

// avb health fails within its deadline when the server refuses, and when
// it accepts but answers nothing.
func TestHealthCommandRefusedAndHung(t *testing.T) {
	t.Parallel()
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	t.Cleanup(hung.Close)
	for name, url := range map[string]string{
		"refused": fmt.Sprintf("http://127.0.0.1:%d/health/", testenv.FreePort(t)),
		"hung":    hung.URL + "/health/",
	} {
		cmd := healthCmd()
		cmd.SetArgs([]string{"--url", url, "--timeout", "500ms"})
		start := time.Now()
		if err := cmd.ExecuteContext(context.Background()); err == nil {
			t.Errorf("%s: health passed", name)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s: took %s", name, took)
		}
	}
}
