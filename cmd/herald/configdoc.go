package main

import (
	"flag"
	"fmt"
	"regexp"
	"strings"
)

// envInUsage extracts the " (env HERALD_X)" suffix internal/config appends.
var envInUsage = regexp.MustCompile(`\s*\(env (HERALD_[A-Z0-9_]+)\)$`)

// configDoc renders every service's flags as the Markdown of
// docs/configuration.md (see TestConfigurationDocUpToDate).
func configDoc() string {
	var b strings.Builder
	b.WriteString("# Configuration reference\n\n")
	b.WriteString("Generated from the services' flags by `make docs` (a test fails when it is stale).\n")
	b.WriteString("Every flag can be set with its environment variable; precedence: flag > environment > default.\n")
	b.WriteString("`herald <service> -h` prints the same list.\n")
	for _, svc := range []struct {
		name string
		fs   *flag.FlagSet
	}{
		{"relay", newRelayCmd().fs},
		{"controller", newControllerCmd().fs},
		{"management", newManagementCmd().fs},
		{"cacher", newCacherCmd().fs},
	} {
		fmt.Fprintf(&b, "\n## herald %s\n\n| flag | environment | default | meaning |\n|---|---|---|---|\n", svc.name)
		svc.fs.VisitAll(func(f *flag.Flag) {
			usage, env := f.Usage, ""
			if m := envInUsage.FindStringSubmatch(usage); m != nil {
				env, usage = "`"+m[1]+"`", strings.TrimSuffix(usage, m[0])
			}
			def := f.DefValue
			if def == "" {
				def = "(none)"
			}
			fmt.Fprintf(&b, "| `-%s` | %s | `%s` | %s |\n", f.Name, env, def, strings.ReplaceAll(usage, "|", `\|`))
		})
	}
	return b.String()
}
