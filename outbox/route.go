package outbox

import (
	"fmt"
	"regexp"
	"strings"
)

// Debezium's route.topic.regex and route.topic.replacement defaults
// (EventRouterConfigDefinition.java:279-297).
const (
	DefaultRouteRegex       = "(?<routedByValue>.*)"
	DefaultRouteReplacement = "outbox.event.${routedByValue}"
)

// router is Kafka Connect's RegexRouter as Debezium's EventRouter applies it to the value
// of route.by.field (EventRouterDelegate.java:235, 246, 373-377): when the regex matches
// the whole value, its first match is replaced with the replacement
// (RegexRouter.java:69-71, Matcher.matches then replaceFirst); otherwise the value
// itself is the topic. Go's RE2 takes Java's syntax for what an outbox route needs
// (named groups, classes, alternation, quantifiers); backreferences and lookaround are
// refused when the router is built.
type router struct {
	re    *regexp.Regexp
	whole *regexp.Regexp
	repl  []replPart
}

// replPart is a literal or a group reference of a java.util.regex replacement string.
type replPart struct {
	literal string
	group   int // -1: literal
}

func newRouter(regex, replacement string) (*router, error) {
	re, err := regexp.Compile(regex)
	if err != nil {
		return nil, fmt.Errorf("route topic regex %q: %w", regex, err)
	}
	whole, err := regexp.Compile(`^(?:` + regex + `)$`)
	if err != nil {
		return nil, fmt.Errorf("route topic regex %q: %w", regex, err)
	}
	repl, err := parseReplacement(replacement, re)
	if err != nil {
		return nil, fmt.Errorf("route topic replacement %q: %w", replacement, err)
	}
	return &router{re: re, whole: whole, repl: repl}, nil
}

// parseReplacement parses a replacement as java.util.regex.Matcher.appendReplacement
// does: "\x" is a literal x, "${name}" a named group, "$n" a group number (the first
// digit always, further digits while they still name an existing group), and any other
// '$' an error.
func parseReplacement(s string, re *regexp.Regexp) ([]replPart, error) {
	var parts []replPart
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			parts = append(parts, replPart{literal: lit.String(), group: -1})
			lit.Reset()
		}
	}
	groups := re.NumSubexp()
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			i++
			if i >= len(s) {
				return nil, fmt.Errorf("character to be escaped is missing")
			}
			lit.WriteByte(s[i])
		case '$':
			i++
			if i >= len(s) {
				return nil, fmt.Errorf("illegal group reference: group index is missing")
			}
			if s[i] == '{' {
				end := strings.IndexByte(s[i:], '}')
				if end < 0 {
					return nil, fmt.Errorf("named capturing group is missing trailing '}'")
				}
				name := s[i+1 : i+end]
				g := re.SubexpIndex(name)
				if g < 0 {
					return nil, fmt.Errorf("no group with name {%s}", name)
				}
				flush()
				parts = append(parts, replPart{group: g})
				i += end
				continue
			}
			if s[i] < '0' || s[i] > '9' {
				return nil, fmt.Errorf("illegal group reference")
			}
			g := int(s[i] - '0')
			for i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9' {
				next := g*10 + int(s[i+1]-'0')
				if next > groups {
					break
				}
				g = next
				i++
			}
			if g > groups {
				return nil, fmt.Errorf("no group %d", g)
			}
			flush()
			parts = append(parts, replPart{group: g})
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	return parts, nil
}

// route returns the topic for a route value.
func (r *router) route(dst []byte, value []byte) []byte {
	if !r.whole.Match(value) {
		return append(dst, value...)
	}
	loc := r.re.FindSubmatchIndex(value)
	if loc == nil {
		return append(dst, value...)
	}
	dst = append(dst, value[:loc[0]]...)
	for _, p := range r.repl {
		if p.group < 0 {
			dst = append(dst, p.literal...)
			continue
		}
		if start, end := loc[2*p.group], loc[2*p.group+1]; start >= 0 {
			dst = append(dst, value[start:end]...)
		}
	}
	return append(dst, value[loc[1]:]...)
}
