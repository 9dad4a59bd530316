//go:build !linux

package pgtest

import "syscall"

// setParentDeathSignal does nothing where the OS has no parent-death signal:
// there a killed test process leaves its server running.
func setParentDeathSignal(*syscall.SysProcAttr, syscall.Signal) {}
