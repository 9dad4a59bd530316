// Package jvm finds Java and the jars of the JVM programs the tests run as references
// (the Apache Kafka broker, Kafka Connect with Debezium), and runs them as process
// groups that cannot outlive the test process.
//
// The jars come from Maven Central through pom.xml beside this file; resolve.sh copies
// them into a cache directory and prints it. PGOUTBOX_JVM_DIR names a directory to use
// instead (one with kafka/ and connect/ of jars).
package jvm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// Module names: the subdirectories of the jar directory, one per pom module.
const (
	Kafka   = "kafka"
	Connect = "connect"
)

// minJava is the oldest Java that runs a Kafka 4 broker.
const minJava = 17

var (
	jarsOnce sync.Once
	jarsDir  string
	jarsErr  error
)

// Jars returns the directory with a subdirectory of jars per module, resolving them
// with resolve.sh on first use in this process (quick once Maven's cache is warm).
func Jars() (string, error) {
	jarsOnce.Do(func() { jarsDir, jarsErr = resolveJars() })
	return jarsDir, jarsErr
}

func resolveJars() (string, error) {
	if dir := os.Getenv("PGOUTBOX_JVM_DIR"); dir != "" {
		if err := checkJarDir(dir); err != nil {
			return "", fmt.Errorf("jvm: PGOUTBOX_JVM_DIR: %w", err)
		}
		return dir, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("jvm: cannot locate resolve.sh")
	}
	script := filepath.Join(filepath.Dir(file), "resolve.sh")
	var stderr bytes.Buffer
	cmd := exec.Command("bash", script)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("jvm: %s: %w: %s", script, err, strings.TrimSpace(lastLines(stderr.String(), 20)))
	}
	dir := strings.TrimSpace(string(out))
	if err := checkJarDir(dir); err != nil {
		return "", fmt.Errorf("jvm: %s: %w", script, err)
	}
	return dir, nil
}

func checkJarDir(dir string) error {
	for _, m := range []string{Kafka, Connect} {
		jars, _ := filepath.Glob(filepath.Join(dir, m, "*.jar"))
		if len(jars) == 0 {
			return fmt.Errorf("no jars in %s", filepath.Join(dir, m))
		}
	}
	return nil
}

// Classpath returns the class path of a module's jars.
func Classpath(module string) (string, error) {
	dir, err := Jars()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, module, "*"), nil
}

var (
	javaOnce sync.Once
	javaPath string
	javaErr  error
)

// Java returns the java launcher: $JAVA_HOME/bin/java if JAVA_HOME is set, else java
// on PATH. It must be Java 17 or newer.
func Java() (string, error) {
	javaOnce.Do(func() { javaPath, javaErr = findJava() })
	return javaPath, javaErr
}

var javaVersion = regexp.MustCompile(`version "(\d+)`)

func findJava() (string, error) {
	java := "java"
	if home := os.Getenv("JAVA_HOME"); home != "" {
		java = filepath.Join(home, "bin", "java")
	}
	path, err := exec.LookPath(java)
	if err != nil {
		return "", fmt.Errorf("jvm: java %d+ not found (set JAVA_HOME or put java on PATH; Debian: apt-get install openjdk-17-jre-headless): %w", minJava, err)
	}
	out, err := exec.Command(path, "-version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("jvm: %s -version: %w: %s", path, err, out)
	}
	m := javaVersion.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("jvm: %s -version: no version in %q", path, out)
	}
	if v, _ := strconv.Atoi(string(m[1])); v < minJava {
		return "", fmt.Errorf("jvm: %s is Java %d, need %d or newer", path, v, minJava)
	}
	return path, nil
}

// Available reports whether Java and the jars are there, resolving the jars if needed.
func Available() error {
	if _, err := Java(); err != nil {
		return err
	}
	_, err := Jars()
	return err
}

// SmallHeap are JVM options for a test program: a small heap and a fast start rather
// than peak throughput.
func SmallHeap(maxHeap string) []string {
	return []string{
		"-Xms32m", "-Xmx" + maxHeap, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-XX:-UsePerfData", "-Xss512k", "-Djava.awt.headless=true",
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}
