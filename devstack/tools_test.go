package devstack_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentvoicebox/avb/internal/testenv"
)

// make tools uses a Temporal CLI (or SpiceDB, or Vault) already on PATH when
// it reports the pinned version, and builds from source otherwise.
func TestToolFromPath(t *testing.T) {
	script := filepath.Join(testenv.RepoRoot(), "scripts", "tool-from-path.sh")
	onPath := t.TempDir()
	fake := filepath.Join(onPath, "temporal")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho 'temporal version 1.5.1 (Server 1.29.1, UI 2.42.1)'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(version string) (string, error) {
		bin := filepath.Join(t.TempDir(), "bin")
		cmd := exec.Command(script, bin, "temporal", version, "--version")
		cmd.Env = []string{"PATH=" + onPath + ":/usr/bin:/bin"}
		out, err := cmd.CombinedOutput()
		if err == nil {
			if target, lerr := os.Readlink(filepath.Join(bin, "temporal")); lerr != nil || target != fake {
				t.Fatalf("not linked into bin: %q %v", target, lerr)
			}
		}
		return string(out), err
	}
	if out, err := run("v1.5.1"); err != nil || !strings.Contains(out, "using temporal 1.5.1 from PATH") {
		t.Fatalf("the pinned version on PATH was not used: %v %s", err, out)
	}
	if out, err := run("v1.5.10"); err == nil || !strings.Contains(out, "building 1.5.10 from source") {
		t.Fatalf("another version on PATH was used: %v %s", err, out)
	}
	if _, err := run("v1.5.0"); err == nil {
		t.Fatal("1.5.1 taken for 1.5.0")
	}
	cmd := exec.Command(script, t.TempDir(), "spicedb", "v1.56.2", "version")
	cmd.Env = []string{"PATH=" + onPath + ":/usr/bin:/bin"}
	if err := cmd.Run(); err == nil {
		t.Fatal("a tool missing from PATH reported found")
	}
}
