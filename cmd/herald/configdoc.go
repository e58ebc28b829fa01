package main

import (
	"flag"
	"fmt"
	"regexp"
	"strings"

	"github.com/herald-chat/herald/assembly"
	"github.com/herald-chat/herald/internal/config"
)

// envInUsage extracts the " (env HERALD_X)" suffix internal/config appends.
var envInUsage = regexp.MustCompile(`\s*\(env (HERALD_[A-Z0-9_]+)\)$`)

// configDoc renders every service's flags as the Markdown of
// docs/configuration.md (see TestConfigurationDocUpToDate).
func configDoc() string {
	var b strings.Builder
	b.WriteString("# Configuration reference\n\n")
	b.WriteString("Generated from the commands' flags by `make docs` (a test fails when it is stale).\n")
	b.WriteString("Every flag can be set with its environment variable; precedence: flag > environment > default.\n")
	b.WriteString("Naming: the flag is its variable without `HERALD_`, in lower case, with dashes\n")
	b.WriteString("(`HERALD_RELAY_ADDR` → `-relay-addr`, `HERALD_ARCHIVE_CHUNK_SIZE` → `-archive-chunk-size`);\n")
	b.WriteString("one flag per variable, the same in every command. Older names still work as deprecated\n")
	b.WriteString("aliases (listed under each command) and log a warning.\n")
	b.WriteString("`herald <command> -h` prints the same list. `herald dev` takes the flags of all four\n")
	b.WriteString("services (except Kafka TLS/SASL); there `-kafka-brokers` and `-s3-endpoint` say where the\n")
	b.WriteString("embedded engines listen and `-store-uri` defaults to `<data-dir>/herald.db`.\n")
	b.WriteString("Every command also honours, without a flag:\n")
	b.WriteString(strings.TrimPrefix(envOnly, "\nEnvironment only:\n"))
	for _, svc := range []struct {
		name string
		fs   *flag.FlagSet
	}{
		{"relay", assembly.NewRelay().FlagSet()},
		{"controller", assembly.NewController().FlagSet()},
		{"management", assembly.NewManagement().FlagSet()},
		{"cacher", assembly.NewCacher().FlagSet()},
		{"dev", newDevCmd().fs},
	} {
		var deprecated []string
		fmt.Fprintf(&b, "\n## herald %s\n\n| flag | environment | default | meaning |\n|---|---|---|---|\n", svc.name)
		svc.fs.VisitAll(func(f *flag.Flag) {
			if name := config.DeprecatedAlias(f); name != "" {
				deprecated = append(deprecated, fmt.Sprintf("`-%s` → `-%s`", f.Name, name))
				return
			}
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
		if len(deprecated) > 0 {
			fmt.Fprintf(&b, "\nDeprecated aliases: %s.\n", strings.Join(deprecated, ", "))
		}
	}
	return b.String()
}
