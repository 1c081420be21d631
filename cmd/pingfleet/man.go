package main

import (
	"fmt"
	"os"

	"github.com/pingfleet/pingfleet/report"
	"github.com/pingfleet/pingfleet/tasks"
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// manCommand writes a man page per command (pingfleet.1, pingfleet-run.1...)
// from the commands themselves: `make man` runs it.
func (a *app) manCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "man DIR",
		Short:  "Write the man pages of every command to DIR",
		Hidden: true,
		Args:   exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return systemErr(err)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true // the same pages from the same code
			header := &doc.GenManHeader{Title: "PINGFLEET", Section: "1", Source: "pingfleet", Manual: "pingfleet manual"}
			if err := doc.GenManTree(root, header, args[0]); err != nil {
				return systemErr(fmt.Errorf("write man pages: %w", err))
			}
			return nil
		},
	}
}

// batchIDs completes a batch ID argument with the recent batches of the
// Redis that --redis or PINGFLEET_REDIS names (nothing when there is none).
func (a *app) batchIDs(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 && cmd.Name() != "cancel" {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if a.redisURL == "" {
		a.redisURL = a.getenv("PINGFLEET_REDIS")
	}
	if a.redisURL == "" || a.setup() != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	_, agg, err := a.connect(cmd.Context(), "")
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	list, err := agg.Recent(cmd.Context(), 50)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ids := make([]string, 0, len(list))
	for _, s := range list {
		ids = append(ids, s.ID+"\t"+string(s.State)+", "+s.Created.Format("2006-01-02 15:04"))
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}

// completeEnums lets the shell complete the flags of cmd that take one of
// a few values.
func completeEnums(cmd *cobra.Command) {
	enums := map[string][]string{
		"output":   {"table", "json", "ndjson", "csv"},
		"engine":   {"shared", "probing"},
		"network":  {"ip", "ip4", "ip6"},
		"embedded": {"auto", "redis-server", "miniredis"},
		"status":   {"up", "down", "error", "cancelled", "expired", "pending"},
		"sort":     {"status", "loss", "rtt"},
		"priority": priorityNames(),

		"log-level":  {"debug", "info", "warn", "error"},
		"log-format": {"text", "json"},

		"timestamp-format": report.TimestampFormats,
	}
	for name, values := range enums {
		if cmd.LocalFlags().Lookup(name) != nil {
			_ = cmd.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(values, cobra.ShellCompDirectiveNoFileComp))
		}
	}
}

func priorityNames() []string {
	out := make([]string, len(tasks.Priorities))
	for i, p := range tasks.Priorities {
		out[i] = string(p)
	}
	return out
}
