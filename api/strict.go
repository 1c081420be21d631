package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
)

// encoding/json keeps the last of two equal keys and matches field names
// without regard to case, so {"hosts": [...], "HOSTS": [...]} would ping
// whichever came last, and another parser in front of the API (a proxy, a
// logging layer) might read the other. The API refuses such bodies.

// checkKeys returns an error naming the first key of body that appears
// twice in its object, or that names one of the API's fields in other
// letters than its own (lower case); labels are the client's and keep
// their case. body must already be known to be valid JSON.
func checkKeys(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	return walkKeys(dec, "", false)
}

// walkKeys reads one value from dec; path names it in errors, and free
// says its keys (if an object) are the client's own.
func walkKeys(dec *json.Decoder, path string, free bool) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := kt.(string)
			field := key
			if path != "" {
				field = path + "." + key
			}
			if seen[key] {
				return fmt.Errorf("key %q appears twice", field)
			}
			seen[key] = true
			if !free && strings.IndexFunc(key, unicode.IsUpper) >= 0 {
				return fmt.Errorf("unknown field %q (field names are lower case)", field)
			}
			if err := walkKeys(dec, field, path == "" && key == "labels"); err != nil {
				return err
			}
		}
		_, err = dec.Token() // '}'
		return err
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if err := walkKeys(dec, fmt.Sprintf("%s[%d]", path, i), false); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ']'
		return err
	}
	return nil
}

// givenOptions returns the options body names, as given: the fields its
// decoding into PingOptions cannot tell from their absence.
func givenOptions(body []byte) map[string]json.RawMessage {
	var req struct {
		Options map[string]json.RawMessage `json:"options"`
	}
	if json.Unmarshal(body, &req) != nil {
		return nil
	}
	return req.Options
}

// explicitZeros returns, for each given option set to a zero that the
// options would silently replace by their default, the detail that
// refuses it: "interval": "0s" is not "no interval", and "count": 0 is
// not fping's reachability check (leaving count out is). An explicit
// "retries": 0 is kept, as "one request": see decodeCreate.
func explicitZeros(given map[string]json.RawMessage) []Detail {
	var details []Detail
	for _, f := range []struct{ name, reason string }{
		{"count", "must be between 1 and 10000 (leave it out for fping's reachability check)"},
		{"interval", "must be at least 1ms (leave it out for the default 1s)"},
		{"timeout", "must be more than 0 (leave it out for the default 500ms)"},
		{"size", "must be at least 24 (leave it out for the default 56)"},
		{"ttl", "must be between 1 and 255 (leave it out for the default 64)"},
		{"backoff", "must be at least 1 (leave it out for the default 1.5)"},
	} {
		raw, ok := given[f.name]
		if !ok || !isZero(raw) {
			continue
		}
		details = append(details, Detail{Field: "options." + f.name, Value: strings.Trim(string(raw), `"`), Reason: f.reason})
	}
	return details
}

// isZero reports whether raw is a JSON 0 or a duration string of 0.
func isZero(raw json.RawMessage) bool {
	var v any
	if json.Unmarshal(raw, &v) != nil {
		return false
	}
	switch v := v.(type) {
	case float64:
		return v == 0
	case string:
		d, err := time.ParseDuration(v)
		return err == nil && d == 0
	}
	return false
}

// canonicalJSON returns body re-encoded with its objects' keys sorted and
// no spaces, so that two bodies that say the same thing compare equal
// (an Idempotency-Key retry from another client library, say).
func canonicalJSON(body []byte) []byte {
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return body
	}
	b, err := json.Marshal(v) // maps are written with sorted keys
	if err != nil {
		return body
	}
	return b
}
