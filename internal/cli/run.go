package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/reconciler-dev/reconciler/internal/apply"
	"github.com/reconciler-dev/reconciler/internal/daemon"
	"github.com/reconciler-dev/reconciler/internal/desired"
	"github.com/reconciler-dev/reconciler/internal/gitcache"
	"github.com/reconciler-dev/reconciler/internal/notify"
	"github.com/reconciler-dev/reconciler/internal/runner"
	"github.com/reconciler-dev/reconciler/internal/scrub"
	"github.com/reconciler-dev/reconciler/internal/source"
)

// defaultStateDir is systemd's StateDirectory= when the unit sets it, else
// /var/lib/reconciler.
func defaultStateDir() string {
	if d, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":"); d != "" {
		return d
	}
	return "/var/lib/reconciler"
}

// configCacheDir is where a remote config repository is cloned: never a
// temporary or per-user folder, where another local user could make it
// first and choose what it fetches from.
func (f *runFlags) configCacheDir() string {
	if f.configCache != "" {
		return f.configCache
	}
	sum := sha256.Sum256([]byte(f.configRepo))
	return filepath.Join(f.stateDir, "config-"+hex.EncodeToString(sum[:6]))
}

type runFlags struct {
	configRepo, configPath, configBranch, configCache, stateDir string
	poll, grace, runTimeout                                     time.Duration
	schedule, listen, secretFile, logFormat                     string
	// verifyKeyring, verifyAllowedSigners: whose signature a config
	// commit must carry.
	verifyKeyring, verifyAllowedSigners string
	fleet                               fleetFlags
}

func runCmd(g *globals) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run as a daemon: reconcile when desired.yaml changes or is committed, on its schedule, and on webhooks",
		Long: `Run as a daemon. The desired state comes from -f FILE (watched), or with
--config-repo from a file committed to a git repository (only committed
content deploys). Each change, each tick of the schedule, each signed
webhook and SIGHUP trigger a reconcile; one runs at a time. SIGTERM lets the
running step finish within --grace.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return g.run(cmd, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configRepo, "config-repo", "", "git repository (URL or local path) holding the desired file")
	fl.StringVar(&f.configPath, "config-path", "", "path of the desired file in --config-repo")
	fl.StringVar(&f.configBranch, "config-branch", "main", "branch of --config-repo to deploy")
	fl.StringVar(&f.configCache, "config-cache", "", "where a remote --config-repo is cloned (default: <state-dir>/config-<hash of the URL>)")
	fl.StringVar(&f.stateDir, "state-dir", defaultStateDir(), "the daemon's own state (the config repository's clone): $STATE_DIRECTORY, else /var/lib/reconciler")
	fl.StringVar(&f.verifyKeyring, "config-verify-keyring", "", "armored OpenPGP public keys: a --config-repo commit not signed by one of them is never applied")
	fl.StringVar(&f.verifyAllowedSigners, "config-verify-allowed-signers", "", "ssh allowed-signers file: a --config-repo commit not signed (gpg.format=ssh) by one of its keys is never applied")
	fl.DurationVar(&f.poll, "poll", time.Minute, "how often a remote --config-repo is asked for new commits")
	fl.StringVar(&f.schedule, "schedule", "", "cron spec overriding schedule: in desired.yaml")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:9280", "HTTP address for /healthz /readyz /status /metrics /hooks/reconcile; \"\" for none")
	fl.StringVar(&f.secretFile, "webhook-secret-file", "", "file holding the webhook's HMAC secret; without it the webhook is off")
	fl.StringVar(&f.logFormat, "log-format", "json", "json or console")
	fl.DurationVar(&f.grace, "grace", 30*time.Second, "on SIGTERM, how long the running step may finish before it is cancelled")
	fl.DurationVar(&f.runTimeout, "run-timeout", time.Hour, "deadline of one reconcile")
	f.fleet.add(fl)
	return cmd
}

func (f *runFlags) validate(cmd *cobra.Command) error {
	var errs []error
	if f.configRepo != "" && f.configPath == "" {
		errs = append(errs, errors.New("--config-repo needs --config-path"))
	}
	if f.configRepo == "" && (f.configPath != "" || cmd.Flags().Changed("config-branch")) {
		errs = append(errs, errors.New("--config-path and --config-branch need --config-repo"))
	}
	if f.configRepo == "" && (f.verifyKeyring != "" || f.verifyAllowedSigners != "") {
		errs = append(errs, errors.New("--config-verify-keyring and --config-verify-allowed-signers need --config-repo"))
	}
	if f.verifyKeyring != "" && f.verifyAllowedSigners != "" {
		errs = append(errs, errors.New("give --config-verify-keyring or --config-verify-allowed-signers, not both"))
	}
	if f.configRepo != "" && cmd.Flags().Changed("file") {
		errs = append(errs, errors.New("-f and --config-repo are two sources; give one"))
	}
	if f.stateDir == "" || !filepath.IsAbs(f.stateDir) {
		errs = append(errs, fmt.Errorf("--state-dir must be an absolute path, got %q", f.stateDir))
	}
	if f.configBranch != "" {
		if err := desired.CheckRef(f.configBranch); err != nil {
			errs = append(errs, fmt.Errorf("--config-branch: %w", err))
		}
	}
	if f.schedule != "" {
		if err := desired.ValidateSchedule(f.schedule); err != nil {
			errs = append(errs, fmt.Errorf("--schedule: %w", err))
		}
	}
	for name, d := range map[string]time.Duration{"--poll": f.poll, "--grace": f.grace, "--run-timeout": f.runTimeout} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %s", name, d))
		}
	}
	if f.logFormat != "json" && f.logFormat != "console" {
		errs = append(errs, fmt.Errorf("--log-format must be json or console, got %q", f.logFormat))
	}
	return errors.Join(errs...)
}

func (g *globals) run(cmd *cobra.Command, f runFlags) error {
	if err := f.validate(cmd); err != nil {
		return err
	}
	level := "info"
	if cmd.Flags().Changed("log-level") {
		level = g.logLevel
	}
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	var encoder zapcore.Encoder = zapcore.NewJSONEncoder(enc)
	if f.logFormat == "console" {
		encoder = zapcore.NewConsoleEncoder(enc)
	}
	// No log line shows a password in a URL (--config-repo may hold one).
	log := zap.New(scrub.Core(zapcore.NewCore(encoder, zapcore.AddSync(g.stderr), lvl))).Named("run")
	defer log.Sync()

	var secret []byte
	if f.secretFile != "" {
		b, err := os.ReadFile(f.secretFile)
		if err != nil {
			return fmt.Errorf("--webhook-secret-file: %w", err)
		}
		if secret = []byte(strings.TrimSpace(string(b))); len(secret) < 16 {
			return fmt.Errorf("--webhook-secret-file: the secret is %d bytes; use at least 16", len(secret))
		}
	}

	var src source.Source
	if f.configRepo != "" {
		cacheDir := f.configCacheDir()
		verify, err := f.verifier()
		if err != nil {
			return err
		}
		src = &source.Repo{URL: f.configRepo, Path: f.configPath, Branch: f.configBranch, CacheDir: cacheDir, Poll: f.poll, Log: log, Verify: verify}
	} else {
		src = &source.File{Path: g.file, Log: log}
	}

	// Notifications are delivered in the background, across runs; the
	// ones in flight at shutdown get notifyWait, then are dropped.
	// One fleet agent for the daemon's life: its status stays in etcd
	// between runs; its lease goes at shutdown.
	fleetAgents := &agents{f: &f.fleet, log: log}
	defer fleetAgents.Close()
	notifier := &notify.Sender{Log: log.Named("notify")}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), notifyWait)
		defer cancel()
		notifier.Close(ctx)
	}()
	d := daemon.New(daemon.Options{
		Notifier: notifier,
		Source:   src,
		Log:      log,
		Schedule: f.schedule,
		Timeout:  f.runTimeout,
		Grace:    f.grace,
		Apply: func(ctx context.Context, st *desired.State, snap *source.Snapshot, trigger string, rlog *zap.Logger) (*apply.Result, error) {
			ag, err := fleetAgents.get(st)
			if err != nil {
				return nil, err
			}
			res, err := apply.Apply(ctx, apply.Options{
				Desired: st, Git: cache(st, rlog), Runner: &runner.Runner{Log: rlog.Named("cmd")}, Log: rlog,
				Trigger: trigger, ConfigCommit: snap.Commit, Env: os.Environ(), Fleet: gateOf(ag),
			})
			// Every apply's outcome goes to the group's status.
			reportApply(ctx, ag, st, res, err, rlog)
			return res, err
		},
	})

	ctx := cmd.Context()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: re-reading the desired state")
				d.Trigger("signal")
			}
		}
	}()

	errc := make(chan error, 1)
	if f.listen != "" {
		ln, err := net.Listen("tcp", f.listen)
		if err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
		if host, _, _ := net.SplitHostPort(f.listen); host != "127.0.0.1" && host != "localhost" && host != "::1" {
			log.Warn("listening beyond loopback: /status and /metrics are readable by anyone who reaches it", zap.String("listen", f.listen))
		}
		srv := &daemon.Server{Daemon: d, Secret: secret, Log: log, Status: func(ctx context.Context) (any, error) {
			return statusReport(ctx, d.Desired(), log)
		}, Fleet: func(ctx context.Context) any {
			return fleetAgents.report(ctx, d.Desired())
		}}
		go func() { errc <- srv.Serve(ctx, ln) }()
		log.Info("listening", zap.String("addr", ln.Addr().String()))
	} else {
		errc <- nil
	}
	log.Info("daemon started", zap.String("source", describe(f, g.file)))
	err = d.Run(ctx)
	if serr := <-errc; serr != nil && err == nil {
		err = serr
	}
	log.Info("daemon stopped")
	return err
}

// verifier is what config commits are verified against. The file is read
// now, so a daemon never starts with a keyring it could not verify with,
// and again at every commit, so an edited keyring takes effect.
func (f *runFlags) verifier() (gitcache.Verifier, error) {
	var v gitcache.Verifier
	flag, path := "--config-verify-keyring", f.verifyKeyring
	if f.verifyAllowedSigners != "" {
		flag, path = "--config-verify-allowed-signers", f.verifyAllowedSigners
	}
	if path == "" {
		return v, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return v, fmt.Errorf("%s: %w", flag, err)
	}
	if f.verifyAllowedSigners != "" {
		v.AllowedSigners = abs
	} else {
		v.Keyring = abs
	}
	if err := v.CheckFiles(); err != nil {
		return v, fmt.Errorf("%s: %w", flag, err)
	}
	return v, nil
}

func describe(f runFlags, file string) string {
	if f.configRepo != "" {
		return f.configRepo + "@" + f.configBranch + ":" + f.configPath
	}
	return file
}
