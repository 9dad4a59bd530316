package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/pgoutbox/pgoutbox/source"
)

// republishState is what --resume-file holds: which republish, and the position
// after its last acknowledged page.
type republishState struct {
	Table     string          `json:"table"`
	Where     string          `json:"where"`
	OrderBy   string          `json:"order_by"`
	After     source.Position `json:"after"`
	Rows      int64           `json:"rows"`
	Done      bool            `json:"done"`
	UpdatedAt time.Time       `json:"updated_at"`
}

func loadState(path string) (republishState, error) {
	var st republishState
	b, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("read republish state %s: %w", path, err)
	}
	return st, nil
}

// saveState writes st atomically: a temporary file, fsync, rename over path, fsync
// of the directory. A crash leaves the old state or the new one, never a torn one.
func saveState(path string, st *republishState) error {
	st.UpdatedAt = time.Now().UTC()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("save republish state: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("save republish state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("save republish state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save republish state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save republish state: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("save republish state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("save republish state: sync directory: %w", err)
	}
	return nil
}
