package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pingfleet/pingfleet/internal/redistest"
	"github.com/pingfleet/pingfleet/internal/testkit"
)

// readmeCommands returns the commands of the README's sh blocks, in order,
// with continued lines joined and comments dropped.
func readmeCommands(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []string
	in, cont := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```sh"):
			in = true
			continue
		case strings.HasPrefix(line, "```"):
			in = false
			continue
		case !in:
			continue
		}
		if i := strings.Index(line, "  # "); i >= 0 && !strings.Contains(line[:i], "'") {
			line = line[:i]
		}
		line = strings.TrimRight(line, " ")
		if strings.HasPrefix(strings.TrimSpace(line), "#") || strings.TrimSpace(line) == "" {
			continue
		}
		if cont || (len(cmds) > 0 && strings.HasPrefix(line, " ") && strings.Count(cmds[len(cmds)-1], "'")%2 == 1) {
			cmds[len(cmds)-1] += "\n" + line
		} else {
			cmds = append(cmds, line)
		}
		cont = strings.HasSuffix(line, "\\")
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cmds
}

// TestREADMEExamples runs every shell example of the README, in order, as
// a user would: the built binary stands for `go run ./cmd/pingfleet` and
// `pingfleet`, a Redis of the test's for 10.0.0.5, loopback addresses and
// a local receiver for the hosts and the callback of the API example (no
// packet leaves the machine), the batch IDs the commands print for the
// README's. Each must succeed (or exit as the README says it does).
func TestREADMEExamples(t *testing.T) {
	t.Parallel()
	bin := binary(t)
	srv := redistest.Start(t)
	redisAddr := srv.Addr
	work := t.TempDir()
	if err := os.Symlink(bin, filepath.Join(work, "pingfleet")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "hosts.txt"), []byte("127.0.23.1-10\nlocalhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "tokens"), []byte("readme-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var callbacks atomic.Int32
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		callbacks.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()
	port, err := testkit.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	apiPort := strconv.Itoa(port)
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}

	env := append(os.Environ(), "PATH="+work+":"+os.Getenv("PATH"), "SECRET=readme-secret")
	ulid := regexp.MustCompile(`01M89WK1P6JR9G72RRKCDX4Q0Q`)
	batchID := regexp.MustCompile(`[0-9A-HJKMNP-TV-Z]{26}`)
	id := ""
	// The API example's targets and callback, made local.
	local := strings.NewReplacer(
		"10.0.0.5:6379", redisAddr,
		"10.0.0.0/28", "127.0.24.0/28", "db1.example.com", "localhost", "10.0.1.1-20", "127.0.25.1-20",
		"https://ci.example.com/hooks/ping", receiver.URL,
		"/run/secrets/tokens", filepath.Join(work, "tokens"),
		":8080", "127.0.0.1:"+apiPort, "http://localhost:8080", "http://127.0.0.1:"+apiPort,
		"go run ./cmd/pingfleet", "pingfleet",
	)
	ran := 0
	for _, c := range readmeCommands(t) {
		c = local.Replace(c)
		if id != "" {
			c = ulid.ReplaceAllString(c, id)
		}
		dir := repo
		if strings.Contains(c, "hosts.txt") && !strings.Contains(c, "examples/") {
			dir = work
		}
		switch {
		case strings.HasPrefix(c, "make test"), strings.HasPrefix(c, "sudo "):
			continue // what this test runs in; a machine setting
		case strings.HasPrefix(c, "export "):
			kv := strings.TrimPrefix(c, "export ")
			env = append(env, kv)
			continue
		case strings.HasPrefix(c, "TOKEN="):
			env = append(env, "TOKEN=readme-token", "API=http://127.0.0.1:"+apiPort)
			continue
		case c == "pingfleet worker":
			// The callback receiver is on loopback, which callbacks reach
			// only when allowed: the README's is on the internet.
			startExec(t, bin, env[len(os.Environ()):], "worker", "--callback-allow", "127.0.0.0/8")
			continue
		case strings.HasPrefix(c, "pingfleet serve "):
			args := strings.Fields(strings.ReplaceAll(strings.ReplaceAll(c, "\\\n", " "), `"$SECRET"`, "readme-secret"))
			startExec(t, bin, env[len(os.Environ()):], append(args[1:], "--callback-allow", "127.0.0.0/8")...)
			testkit.Eventually(t, 30*time.Second, func() bool {
				conn, err := net.Dial("tcp", "127.0.0.1:"+apiPort)
				if err == nil {
					conn.Close()
				}
				return err == nil
			}, "serve listening")
			continue
		}
		want := 0
		if strings.HasPrefix(c, "pingfleet cancel") {
			want = ExitUsage // the README: exit 3 once the batch has ended
		}
		if strings.HasPrefix(c, "curl -sN") { // an event stream: ends with the batch
			c = strings.Replace(c, "curl -sN", "curl -sN --max-time 20", 1)
		}
		cmd := exec.Command("bash", "-o", "pipefail", "-c", c)
		cmd.Dir, cmd.Env = dir, env
		began := time.Now()
		out, err := cmd.CombinedOutput()
		if took := time.Since(began); took > 5*time.Second {
			t.Logf("README example %q took %s", c, took.Round(time.Millisecond))
		}
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		ran++
		if code != want {
			t.Errorf("README example\n  %s\nexit %d; want %d\n%s", c, code, want, out)
			continue
		}
		switch {
		case strings.HasPrefix(c, "pingfleet enqueue"):
			id = strings.TrimSpace(string(out))
			if !batchID.MatchString(id) {
				t.Fatalf("enqueue printed %q; want a batch ID", out)
			}
		case strings.HasPrefix(c, "curl -s -X POST"):
			var v struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(out, &v); err != nil || v.ID == "" {
				t.Fatalf("POST answered %s (%v); want the batch", out, err)
			}
			env = append(env, "ID="+v.ID)
		case strings.HasPrefix(c, "curl -s -X DELETE"):
			// The README's worker has finished the batch by now (the
			// event stream before ended with it): 409, as documented.
			if !strings.Contains(string(out), `"state":"cancelled"`) && !strings.Contains(string(out), "already") {
				t.Errorf("README example\n  %s\nanswered %q; want the cancelled batch or a 409 saying it had ended", c, out)
			}
		case strings.HasPrefix(c, "curl"):
			var answer map[string]json.RawMessage
			if len(out) == 0 || (out[0] == '{' && json.Unmarshal(out, &answer) == nil && len(answer["error"]) > 0 && answer["error"][0] == '"') {
				t.Errorf("README example\n  %s\nanswered %q", c, out)
			}
		}
	}
	if ran < 17 {
		t.Errorf("ran %d README examples; the README has more", ran)
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return callbacks.Load() == 1 }, "the API example's callback")
}
