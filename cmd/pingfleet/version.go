package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// buildVersion and buildCommit, when set at link time (make build, the
// Dockerfile: -ldflags "-X main.buildVersion=v1.2.3 -X main.buildCommit=abc"),
// name the binary where the build info cannot: a build from a source tree
// without its .git, or with -buildvcs=false.
var buildVersion, buildCommit string

// version describes this binary: its module version ("(devel)" when built
// from a checkout), the commit it was built from, and the Go that built it.
func version() string {
	v, commit, modified := "(devel)", "unknown", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
				if len(commit) > 12 {
					commit = commit[:12]
				}
			case "vcs.modified":
				if s.Value == "true" {
					modified = " (modified)"
				}
			}
		}
	}
	if buildVersion != "" {
		v = buildVersion
	}
	if buildCommit != "" {
		commit, modified = buildCommit, ""
	}
	return fmt.Sprintf("pingfleet %s, commit %s%s, %s %s/%s", v, commit, modified, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func (a *app) versionCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, the commit and the Go version of this binary",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(a.stdout, version())
			return err
		},
	}
	withoutGlobalFlags(cmd)
	return cmd
}

// withoutGlobalFlags leaves the global flags (--redis, --log-level...) out
// of cmd's help, for a command none of them means anything to.
func withoutGlobalFlags(cmd *cobra.Command) {
	const global = `{{if .HasAvailableInheritedFlags}}

Global Flags:
{{.InheritedFlags.FlagUsages | trimTrailingWhitespaces}}{{end}}`
	if t := cmd.UsageTemplate(); strings.Contains(t, global) {
		cmd.SetUsageTemplate(strings.Replace(t, global, "", 1))
	}
}
