package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/rs/zerolog"

	"github.com/pgoutbox/pgoutbox/debezium"
)

// runDebeziumConfig prints the pgoutbox flags equivalent to a Debezium connector
// configuration, secrets redacted, so the mapping can be seen before switching.
func runDebeziumConfig(args []string, stdout io.Writer) error {
	switch {
	case len(args) == 1 && (args[0] == "-h" || args[0] == "--help"):
		fmt.Fprint(stdout, "Usage: pgoutbox debezium-config FILE\n\nPrints the pgoutbox flags equivalent to a Debezium PostgreSQL connector configuration\n(the JSON posted to Kafka Connect's REST API, or a .properties file), secrets redacted.\nAn option pgoutbox cannot honour is an error naming it.\n")
		return errHelp
	case len(args) != 1:
		return &usageError{errors.New("debezium-config takes one FILE")}
	}
	r, err := readDebezium(args[0])
	if err != nil {
		return err
	}
	return r.Print(stdout)
}

// logDebezium logs what --debezium-config accepted without effect (debug) and what
// it assumed (warn).
func logDebezium(log zerolog.Logger, r *debezium.Result) {
	if r == nil {
		return
	}
	for _, i := range r.Ignored {
		log.Debug().Str("option", i.Option).Str("reason", i.Reason).Msg("debezium option accepted without effect on the outbox")
	}
	for _, n := range r.Notes {
		log.Warn().Str("note", n).Msg("debezium config")
	}
}
