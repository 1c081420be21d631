package api

import (
	"encoding/json"
	"net/http"
)

// Error is the body of every error answer.
type Error struct {
	Error   string   `json:"error"`
	Details []Detail `json:"details,omitempty"`
}

// Detail names one offending host or field.
type Detail struct {
	Field    string `json:"field,omitempty"`    // e.g. "options.count", "hosts[3]"
	Value    string `json:"value,omitempty"`    // what was sent
	Position int    `json:"position,omitempty"` // 1-based index in hosts
	Reason   string `json:"reason"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string, details ...Detail) {
	writeJSON(w, code, Error{Error: msg, Details: details})
}

// problem is a request refused with a status code and details.
type problem struct {
	code    int
	msg     string
	details []Detail
}

func (p *problem) Error() string { return p.msg }
