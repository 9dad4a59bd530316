package pgtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// serverBinaries are the programs a cluster needs; they must come from one
// installation so initdb's catalog matches the server that reads it.
var serverBinaries = []string{"initdb", "postgres"}

// Available reports whether the PostgreSQL server binaries were found, so
// callers can skip or fail with a clear message instead of a confusing exec
// error.
func Available() error {
	_, err := findBinDir()
	return err
}

// findBinDir returns the directory holding initdb and postgres. It looks at
// PATH first (so a developer can point at another version), then at
// `pg_config --bindir`, then at the highest /usr/lib/postgresql/*/bin, where
// Debian keeps the server binaries off PATH.
func findBinDir() (string, error) {
	var tried []string
	if p, err := exec.LookPath("initdb"); err == nil {
		// Resolve symlinks: /usr/local/bin/initdb may point into the real
		// bin directory, which is where postgres lives too.
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if hasServerBinaries(dir) {
			return dir, nil
		}
		tried = append(tried, dir)
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if hasServerBinaries(dir) {
			return dir, nil
		}
		tried = append(tried, dir)
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return majorVersion(dirs[i]) > majorVersion(dirs[j]) })
	for _, dir := range dirs {
		if hasServerBinaries(dir) {
			return dir, nil
		}
		tried = append(tried, dir)
	}
	if len(tried) == 0 {
		return "", errors.New("pgtest: postgresql server binaries (initdb, postgres) not found on PATH, via pg_config or in /usr/lib/postgresql/*/bin")
	}
	return "", fmt.Errorf("pgtest: postgresql server binaries (initdb, postgres) not found; looked in %s", strings.Join(tried, ", "))
}

func hasServerBinaries(dir string) bool {
	for _, name := range serverBinaries {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// majorVersion extracts 15 from /usr/lib/postgresql/15/bin; unknown is -1.
func majorVersion(binDir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	if err != nil {
		return -1
	}
	return v
}
