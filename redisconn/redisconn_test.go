package redisconn_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/pingfleet/pingfleet/redisconn"
)

func TestOpen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url     string
		kind    string // client type
		wantErr string
	}{
		{"redis://127.0.0.1:6379/0", "*redis.Client", ""},
		{"rediss://u:p@127.0.0.1:6380/1", "*redis.Client", ""},
		{"redis-cluster://127.0.0.1:7000?addr=127.0.0.1:7001", "*redis.ClusterClient", ""},
		{"redis-sentinel://127.0.0.1:26379/0?master_name=mymaster", "*redis.Client", ""},
		{"redis-sentinel://127.0.0.1:26379/0", "", "master_name is required"},
		{"http://127.0.0.1", "", "unknown Redis URL scheme"},
		{"127.0.0.1:6379", "", "unknown Redis URL scheme"},
		{"redis-galaxy://x", "", "unknown Redis URL scheme"},
		{"redis://:s3cret@127.0.0.1:6379/notanumber", "", "invalid database number"},
	}
	for _, tc := range tests {
		c, err := redisconn.Open(tc.url)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Open(%s) error = %v; want %q", tc.url, err, tc.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "s3cret") {
				t.Errorf("Open(%s) error shows the password: %v", tc.url, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Open(%s): %v", tc.url, err)
			continue
		}
		if got := typeName(c); got != tc.kind {
			t.Errorf("Open(%s) = %s; want %s", tc.url, got, tc.kind)
		}
		c.Close()
	}
	if !errors.Is(func() error { _, err := redisconn.Open("ftp://x"); return err }(), redisconn.ErrScheme) {
		t.Error("ErrScheme not wrapped")
	}
}

func typeName(c redis.UniversalClient) string {
	switch c.(type) {
	case *redis.Client:
		return "*redis.Client"
	case *redis.ClusterClient:
		return "*redis.ClusterClient"
	}
	return "other"
}

func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"redis://user:s3cret@host:6379/0":                                           "redis://user:xxxxx@host:6379/0",
		"redis-sentinel://:s3cret@h:26379/0?master_name=m&sentinel_password=s3cret": "redis-sentinel://:xxxxx@h:26379/0?master_name=m&sentinel_password=xxxxx",
		"redis://host:6379": "redis://host:6379",
	} {
		if got := redisconn.Redact(in); got != want {
			t.Errorf("Redact(%s) = %s; want %s", in, got, want)
		}
	}
}
