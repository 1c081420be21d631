package tasks

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"
)

// Decoder decodes TypePingHost payloads exactly as DecodePingPayload does,
// and remembers the options of the payloads it has seen. Every task of a
// batch carries the same options, so a worker parses and checks them once
// per batch instead of once per host. A payload in the layout NewPingTask
// writes, whose options it remembers, is decoded without encoding/json;
// anything else goes through DecodePingPayload. Safe for concurrent use.
type Decoder struct {
	mu   sync.Mutex
	opts map[string]PingOptions // a payload's "opts" text → its checked, normalized options
}

// decoderSize bounds the options a Decoder remembers: the batches one
// worker runs at a time. When full, it forgets them all and starts again.
const decoderSize = 256

// Decode decodes and validates b.
func (d *Decoder) Decode(b []byte) (PingPayload, error) {
	// Known splits b again below when the options are new (once per
	// batch). Sharing the split through a helper made Known's path need
	// 8 KiB of stack instead of 4 on the worker's waiting goroutines
	// (TestBudgetStackWhileWaiting), so Known stays one function.
	if p, err, ok := d.Known(b); ok {
		return p, err
	}
	f, ok := splitPayload(b)
	if !ok {
		return DecodePingPayload(b)
	}
	// The options alone must decode: text after them would make the whole
	// payload mean something else than its first fields say.
	var o PingOptions
	if err := json.Unmarshal(f.opts, &o); err != nil {
		return DecodePingPayload(b)
	}
	p := PingPayload{V: f.v, BatchID: f.batch, Host: f.host, Options: o}
	if err := p.Validate(); err != nil {
		return PingPayload{}, err
	}
	p.Options = p.Options.Normalize()
	d.mu.Lock()
	if d.opts == nil || len(d.opts) >= decoderSize {
		d.opts = make(map[string]PingOptions)
	}
	d.opts[string(f.opts)] = p.Options
	d.mu.Unlock()
	return p, nil
}

// Known decodes b if it is in NewPingTask's layout and its options are
// remembered, without encoding/json (whose decoding needs a deep stack).
// ok is false when Decode has to do it.
func (d *Decoder) Known(b []byte) (p PingPayload, err error, ok bool) {
	f, ok := splitPayload(b)
	if !ok {
		return PingPayload{}, nil, false
	}
	d.mu.Lock()
	o, ok := d.opts[string(f.opts)]
	d.mu.Unlock()
	if !ok {
		return PingPayload{}, nil, false
	}
	p = PingPayload{V: f.v, BatchID: f.batch, Host: f.host, Options: o}
	if err := p.validateIDs(); err != nil {
		return PingPayload{}, err, true
	}
	return p, nil, true
}

// payloadFields are the parts of a payload in NewPingTask's layout.
type payloadFields struct {
	v           int
	batch, host string
	opts        []byte // the options' JSON text
}

// splitPayload cuts b in NewPingTask's layout,
// {"v":1,"batch":"…","host":"…","opts":{…}}, into its fields. It reports
// false for any other layout, and for strings that JSON would have to
// unescape or repair (escapes, control characters, bytes beyond ASCII).
func splitPayload(b []byte) (payloadFields, bool) {
	var f payloadFields
	rest, ok := bytes.CutPrefix(b, []byte(`{"v":`))
	if !ok {
		return f, false
	}
	end := 0
	for end < len(rest) && end < 9 && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	if end > 1 && rest[0] == '0' { // JSON has no leading zeros
		return f, false
	}
	v, err := strconv.Atoi(string(rest[:end]))
	if err != nil {
		return f, false
	}
	f.v = v
	if rest, ok = bytes.CutPrefix(rest[end:], []byte(`,"batch":"`)); !ok {
		return f, false
	}
	if f.batch, rest, ok = plainString(rest); !ok {
		return f, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"host":"`)); !ok {
		return f, false
	}
	if f.host, rest, ok = plainString(rest); !ok {
		return f, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"opts":{`)); !ok {
		return f, false
	}
	if len(rest) == 0 || rest[len(rest)-1] != '}' {
		return f, false
	}
	f.opts = b[len(b)-len(rest)-1 : len(b)-1]
	return f, true
}

// plainString reads a JSON string's characters up to its closing quote,
// if none needs decoding, and returns it and what follows the quote.
func plainString(b []byte) (string, []byte, bool) {
	for i, c := range b {
		switch {
		case c == '"':
			return string(b[:i]), b[i+1:], true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", nil, false
		}
	}
	return "", nil, false
}
