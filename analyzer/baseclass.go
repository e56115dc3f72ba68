package analyzer

import (
	"path"
	"strings"
)

// baseClass says which of the executable-name tables (shells,
// pkgManagers, tools...) hold a base name: classifyExec looks a name up
// once in baseClasses rather than once per table. The tables stay the
// reference (TestBaseClasses).
type baseClass uint16

const (
	baseShell baseClass = 1 << iota
	basePkgManager
	baseTool
	baseScanner
	baseMiner
	baseUserTool
	baseWiper
	baseSearchTool
	baseContainerAdmin
	baseRelayTool
)

// baseClassTables are the tables baseClasses joins, by class.
func baseClassTables() map[baseClass]map[string]bool {
	return map[baseClass]map[string]bool{
		baseShell: shells, basePkgManager: pkgManagers, baseTool: tools, baseScanner: scanners,
		baseMiner: miners, baseUserTool: userTools, baseWiper: wipers, baseSearchTool: searchTools,
		baseContainerAdmin: containerAdmins, baseRelayTool: relayTools,
	}
}

var baseClasses = func() map[string]baseClass {
	out := map[string]baseClass{}
	for cls, table := range baseClassTables() {
		for name, in := range table {
			if in {
				out[name] |= cls
			}
		}
	}
	return out
}()

// isShellPath reports whether the executable at exe is a shell
// (shells[path.Base(exe)]). Every shell's name ends in "sh" or is
// busybox: another name is answered without taking its base name or
// looking it up (TestShellPath).
func isShellPath(exe string) bool {
	if n := len(exe); n > 0 && exe[n-1] != '/' && !strings.HasSuffix(exe, "sh") && !strings.HasSuffix(exe, "busybox") {
		return false
	}
	return shells[path.Base(exe)]
}
