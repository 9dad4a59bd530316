package debezium

import (
	"fmt"
	"io"
	"strings"
)

// Print writes the flags as one pgoutbox command line, secrets redacted, followed by
// what could not be derived, what to check, and what was accepted without effect.
func (r *Result) Print(w io.Writer) error {
	var b strings.Builder
	name := ""
	if r.Name != "" {
		name = fmt.Sprintf(" %q", r.Name)
	}
	fmt.Fprintf(&b, "# pgoutbox flags equivalent to the Debezium connector%s (secrets redacted)\n", name)
	b.WriteString("pgoutbox")
	var problems []Flag
	for _, f := range r.Flags {
		if f.Problem != "" {
			problems = append(problems, f)
			continue
		}
		b.WriteString(" \\\n  --" + f.Name)
		if !f.Bool {
			b.WriteString(" " + shellQuote(f.Shown))
		}
	}
	b.WriteString("\n")
	if len(problems) > 0 {
		b.WriteString("\n# Not derived; give these flags yourself:\n")
		for _, f := range problems {
			fmt.Fprintf(&b, "#   --%s: %s\n", f.Name, f.Problem)
		}
	}
	if len(r.Notes) > 0 {
		b.WriteString("\n# Check:\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "#   %s\n", n)
		}
	}
	b.WriteString("\n# Where each flag comes from:\n")
	for _, f := range r.Flags {
		if f.Problem == "" {
			fmt.Fprintf(&b, "#   --%s <- %s\n", f.Name, strings.Join(f.From, ", "))
		}
	}
	if len(r.Ignored) > 0 {
		b.WriteString("\n# Accepted without effect on an outbox:\n")
		for _, i := range r.Ignored {
			fmt.Fprintf(&b, "#   %s: %s\n", i.Option, i.Reason)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@,+%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
