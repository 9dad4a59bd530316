package outbox

import (
	"fmt"
	"strings"
)

// template is a parsed topic template: literal text and "{column}" placeholders.
type template []part

type part struct {
	literal string
	column  string // set for a placeholder
}

func parseTemplate(s string) (template, error) {
	var t template
	for len(s) > 0 {
		open := strings.IndexByte(s, '{')
		if open < 0 {
			if strings.IndexByte(s, '}') >= 0 {
				return nil, fmt.Errorf("topic template %q: unmatched '}'", s)
			}
			t = append(t, part{literal: s})
			break
		}
		if open > 0 {
			if strings.IndexByte(s[:open], '}') >= 0 {
				return nil, fmt.Errorf("topic template %q: unmatched '}'", s)
			}
			t = append(t, part{literal: s[:open]})
		}
		end := strings.IndexByte(s[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("topic template %q: unmatched '{'", s)
		}
		col := s[open+1 : open+end]
		if col == "" || strings.ContainsAny(col, "{") {
			return nil, fmt.Errorf("topic template %q: bad placeholder {%s}", s, col)
		}
		t = append(t, part{column: col})
		s = s[open+end+1:]
	}
	if len(t) == 0 {
		return nil, fmt.Errorf("topic template is empty")
	}
	return t, nil
}

func (t template) hasColumns() bool {
	for _, p := range t {
		if p.column != "" {
			return true
		}
	}
	return false
}
