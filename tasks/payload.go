package tasks

import (
	"encoding/json"
	"fmt"
)

// PayloadWriter writes the payloads of one batch's ping tasks: the bytes
// NewPingTask writes, with the part every task of the batch shares (its ID
// and options) encoded and checked once. Safe for concurrent use.
type PayloadWriter struct {
	head []byte // {"v":1,"batch":"<id>","host":
	tail []byte // ,"opts":{...}}
}

// NewPayloadWriter returns the writer of batchID's payloads with opts,
// checking both.
func NewPayloadWriter(batchID string, opts PingOptions) (*PayloadWriter, error) {
	p := PingPayload{V: PayloadVersion, BatchID: batchID, Host: "h", Options: opts.Normalize()}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	id, err := json.Marshal(p.BatchID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPayload, err)
	}
	o, err := json.Marshal(p.Options)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPayload, err)
	}
	w := &PayloadWriter{
		head: fmt.Appendf(nil, `{"v":%d,"batch":%s,"host":`, p.V, id),
		tail: append(append([]byte(`,"opts":`), o...), '}'),
	}
	return w, nil
}

// Append appends host's payload to dst.
func (w *PayloadWriter) Append(dst []byte, host string) ([]byte, error) {
	if err := (PingPayload{V: PayloadVersion, BatchID: "b", Host: host}).validateIDs(); err != nil {
		return dst, err
	}
	dst = append(dst, w.head...)
	if plainJSON(host) {
		dst = append(dst, '"')
		dst = append(dst, host...)
		dst = append(dst, '"')
	} else {
		b, err := json.Marshal(host)
		if err != nil {
			return dst, fmt.Errorf("%w: %w", ErrInvalidPayload, err)
		}
		dst = append(dst, b...)
	}
	return append(dst, w.tail...), nil
}

// plainJSON reports whether encoding/json writes s as itself in quotes:
// printable ASCII but the characters it escapes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}
