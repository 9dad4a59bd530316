package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// promqlFuncs are PromQL's functions (Prometheus 2.x and 3.x, docs/querying/
// functions.md) and aggregation operators (operators.md): an identifier followed by
// '(' must be one of them.
var promqlFuncs = setOf(`abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes
	clamp clamp_max clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month deg delta
	deriv double_exponential_smoothing end exp floor histogram_avg histogram_count histogram_fraction
	histogram_quantile histogram_stddev histogram_stdvar histogram_sum holt_winters hour idelta increase info irate
	label_join label_replace last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month pi
	predict_linear present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label
	sort_by_label_desc sort_desc sqrt start stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp
	vector year`)

var promqlAggregations = setOf(`sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio`)

// promqlKeywords are binary operators and modifiers spelled as words.
var promqlKeywords = setOf(`and or unless bool offset atan2 inf nan`)

// promqlLabelLists are modifiers followed by a parenthesised list of label names.
var promqlLabelLists = setOf(`by without on ignoring group_left group_right`)

func setOf(words string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(words) {
		m[w] = true
	}
	return m
}

// metricNames returns the metric names a PromQL expression selects. It is a
// tokenizer, not a parser: it skips strings, label matchers ({...}, except a
// __name__ matcher), ranges and subqueries ([...]), numbers and durations, Grafana
// variables ($x, ${x}), function and aggregation names, keywords and the label
// lists of by/without/on/ignoring/group_left/group_right. What remains are
// metric names. An identifier called like a function that PromQL does not know is
// an error, so a typo cannot hide as a "metric".
func metricNames(expr string) ([]string, error) {
	var names []string
	s := expr
	i := 0
	skipSpace := func(j int) int {
		for j < len(s) && strings.ContainsRune(" \t\r\n", rune(s[j])) {
			j++
		}
		return j
	}
	// skipString returns the index after the string literal starting at j.
	skipString := func(j int) (int, error) {
		q := s[j]
		for k := j + 1; k < len(s); k++ {
			switch {
			case s[k] == '\\' && q != '`':
				k++
			case s[k] == q:
				return k + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string in %q", expr)
	}
	// skipGroup returns the index after the bracketed group starting at j, and
	// its content.
	skipGroup := func(j int, open, close byte) (int, string, error) {
		depth := 0
		for k := j; k < len(s); k++ {
			switch c := s[k]; {
			case c == '"' || c == '\'' || c == '`':
				e, err := skipString(k)
				if err != nil {
					return 0, "", err
				}
				k = e - 1
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					return k + 1, s[j+1 : k], nil
				}
			}
		}
		return 0, "", fmt.Errorf("unbalanced %c in %q", open, expr)
	}
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
	isIdent := func(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }
	for i < len(s) {
		c := s[i]
		switch {
		case strings.ContainsRune(" \t\r\n", rune(c)):
			i++
		case c == '#': // comment to the end of the line
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			e, err := skipString(i)
			if err != nil {
				return nil, err
			}
			i = e
		case c == '{':
			e, content, err := skipGroup(i, '{', '}')
			if err != nil {
				return nil, err
			}
			if n := nameMatcher(content); n != "" {
				names = append(names, n)
			}
			i = e
		case c == '[':
			e, _, err := skipGroup(i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = e
		case c == '$': // Grafana variable
			i++
			if i < len(s) && s[i] == '{' {
				e, _, err := skipGroup(i, '{', '}')
				if err != nil {
					return nil, err
				}
				i = e
			}
			for i < len(s) && isIdent(s[i]) {
				i++
			}
		case c >= '0' && c <= '9' || (c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9'):
			// A number, a duration (5m, 1h30m) or a hex literal.
			for i < len(s) && (isIdent(s[i]) || s[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(s) && isIdent(s[j]) {
				j++
			}
			word := s[i:j]
			lower := strings.ToLower(word)
			next := skipSpace(j)
			nextWord := ""
			if k := next; k < len(s) && isIdentStart(s[k]) {
				for k < len(s) && isIdent(s[k]) {
					k++
				}
				nextWord = s[next:k]
			}
			switch {
			case promqlKeywords[lower]:
				i = j
			case promqlLabelLists[lower]:
				i = j
				if next < len(s) && s[next] == '(' {
					e, _, err := skipGroup(next, '(', ')')
					if err != nil {
						return nil, err
					}
					i = e
				}
			case promqlAggregations[lower] && (next < len(s) && s[next] == '(' || nextWord == "by" || nextWord == "without"):
				i = j
			case next < len(s) && s[next] == '(':
				if !promqlFuncs[word] {
					return nil, fmt.Errorf("unknown PromQL function %q in %q", word, expr)
				}
				i = j
			default:
				names = append(names, word)
				i = j
			}
		default: // operators, commas, parentheses, @
			i++
		}
	}
	return names, nil
}

// nameMatcher returns the metric name of a {__name__="x"} matcher, if any.
func nameMatcher(matchers string) string {
	for _, m := range strings.Split(matchers, ",") {
		k, v, ok := strings.Cut(m, "=")
		if ok && strings.TrimSpace(k) == "__name__" && !strings.HasPrefix(v, "~") {
			return strings.Trim(strings.TrimSpace(v), "\"'`")
		}
	}
	return ""
}

// grafanaVariableQuery returns the PromQL inside a Grafana Prometheus variable
// query: label_values(expr, label) and query_result(expr) hold an expression,
// label_values(label), label_names() and metrics(regex) none.
func grafanaVariableQuery(q string) string {
	q = strings.TrimSpace(q)
	if inner, ok := strings.CutPrefix(q, "label_values("); ok {
		inner = strings.TrimSuffix(inner, ")")
		if k := strings.LastIndex(inner, ","); k >= 0 {
			return inner[:k]
		}
		return ""
	}
	if inner, ok := strings.CutPrefix(q, "query_result("); ok {
		return strings.TrimSuffix(inner, ")")
	}
	return ""
}

// TestMetricNamesTokenizer: the tokenizer finds the metric names of expressions of
// the shapes the dashboard and the alerts use, and nothing else.
func TestMetricNamesTokenizer(t *testing.T) {
	cases := []struct {
		expr string
		want string
	}{
		{`up`, "up"},
		{`sum by (topic) (rate(pgoutbox_events_published_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))`, "pgoutbox_events_published_total"},
		{`histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="}{[("}[5m])))`, "a_bucket"},
		{`sum(rate(a_sum[1m])) / sum without (instance) (rate(a_count[1m] offset 5m))`, "a_sum a_count"},
		{`max by (job) (x) == 0 or sum by (job) (up{job=~".*pgoutbox.*"}) == 0`, "x up"},
		{"a == 0\n  unless on (job, instance)\nb == 1 # comment with c_total", "a b"},
		{`changes(p[30m]) > 2 and on (job, instance) q`, "p q"},
		{`label_replace(m, "dst", "$1", "src", "(.*)") * on (instance) group_left (version) info_metric`, "m info_metric"},
		{`{__name__="by_name", job="j"} + 1e3 + 0x1F + Inf`, "by_name"},
		{`m1 - m2 @ start()`, "m1 m2"},
		{`sum(x) by (le)`, "x"},
		{`topk(5, y) > bool 3`, "y"},
		{`max_over_time(z[15m:1m])`, "z"},
	}
	for _, c := range cases {
		got, err := metricNames(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		if strings.Join(got, " ") != c.want {
			t.Errorf("%s: got %q, want %q", c.expr, got, c.want)
		}
	}
	for _, bad := range []string{`rat(x[5m])`, `sum(x{a="b)`, `x[5m`} {
		if got, err := metricNames(bad); err == nil {
			t.Errorf("%s: no error (names %q)", bad, got)
		}
	}
	if got := grafanaVariableQuery(`label_values(pgoutbox_build_info{job=~"$job"}, instance)`); got != `pgoutbox_build_info{job=~"$job"}` {
		t.Errorf("label_values: %q", got)
	}
	if got := grafanaVariableQuery(`label_values(job)`); got != "" {
		t.Errorf("label_values(label): %q", got)
	}
}
