package report

import "io"

// trimWriter drops the spaces at the end of each line it passes on: a
// tabwriter pads every cell but the last, so a row whose last cells are
// empty would end in spaces.
type trimWriter struct {
	w      io.Writer
	spaces int // spaces held back: written only if more text follows
	buf    []byte
}

func (t *trimWriter) Write(p []byte) (int, error) {
	t.buf = t.buf[:0]
	for _, c := range p {
		switch c {
		case ' ':
			t.spaces++
			continue
		case '\n':
			t.spaces = 0
		default:
			for ; t.spaces > 0; t.spaces-- {
				t.buf = append(t.buf, ' ')
			}
		}
		t.buf = append(t.buf, c)
	}
	if _, err := t.w.Write(t.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}
