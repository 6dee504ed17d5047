package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// initSpec is what the node hands `kubestack pod-init`: how to set up the pod's view of
// the file system and which command to run in it.
type initSpec struct {
	Argv []string `json:"argv"`
	// Dir is the working directory, inside the pod's mounts.
	Dir string `json:"dir"`
	// Namespaces: the process was started in new PID, mount and UTS namespaces, and
	// pod-init stays as their PID 1. Without them it execs the command directly.
	Namespaces bool   `json:"namespaces"`
	Hostname   string `json:"hostname,omitempty"`
	// Stage is an empty host directory where directories that need new entries are
	// assembled before they are moved into place.
	Stage string `json:"stage,omitempty"`
	// PodDir holds the pod's volumes: mount points may be created in them.
	PodDir string      `json:"podDir,omitempty"`
	Mounts []initMount `json:"mounts,omitempty"`
	// AddressSpace, when positive, is RLIMIT_AS in bytes (the container's memory limit).
	AddressSpace uint64 `json:"addressSpace,omitempty"`
}

// initMount is one mount in the pod's mount namespace.
type initMount struct {
	// Source is the host file or directory to bind; empty means a new tmpfs.
	Source   string `json:"source,omitempty"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
	// TmpfsSize is the tmpfs size in bytes; 0 leaves the kernel default.
	TmpfsSize int64 `json:"tmpfsSize,omitempty"`
	// origin is Source as given, once Source is a /proc/self/fd link to it.
	origin string
}

// Exit codes of pod-init itself, when the command never ran. The node reports them
// with reason StartError; the message comes through the status pipe.
const (
	exitSetupFailed = 128
	exitCannotRun   = 127
)

// statusFD is the pipe to the node: pod-init writes an error to it, or closes it once
// the command runs (it is close-on-exec, so a successful exec closes it too).
const statusFD = 3

// runPodInit is `kubestack pod-init SPEC`: it runs as the first process of a pod and
// never returns.
func runPodInit(args []string) error {
	if len(args) == 1 && args[0] == "--exit" {
		return nil // the command of the node's namespace probe
	}
	syscall.CloseOnExec(statusFD)
	status := os.NewFile(statusFD, "status")
	fail := func(code int, format string, a ...any) {
		msg := fmt.Sprintf(format, a...)
		fmt.Fprintln(os.Stderr, "kubestack:", msg)
		_, _ = status.WriteString(msg)
		os.Exit(code)
	}
	if len(args) != 1 {
		fail(exitSetupFailed, "pod-init: want one argument, the spec file")
	}
	raw, err := os.ReadFile(args[0])
	if err != nil {
		fail(exitSetupFailed, "reading the pod spec: %v", err)
	}
	var spec initSpec
	if err := json.Unmarshal(raw, &spec); err != nil {
		fail(exitSetupFailed, "reading the pod spec: %v", err)
	}
	if spec.Namespaces {
		if err := setUpNamespaces(&spec); err != nil {
			fail(exitSetupFailed, "%v", err)
		}
	}
	dir := spec.Dir
	if dir == "" {
		dir = "/"
	}
	if err := os.Chdir(dir); err != nil {
		fail(exitCannotRun, "working directory: %v", err)
	}
	// The command is looked up with the pod's PATH, from its working directory, as the
	// container runtime does.
	path, err := exec.LookPath(spec.Argv[0])
	if err != nil && !errors.Is(err, exec.ErrDot) {
		fail(exitCannotRun, "exec: %q: %v", spec.Argv[0], unwrapExec(err))
	}
	if !spec.Namespaces {
		if spec.AddressSpace > 0 {
			// Just before the exec: pod-init's own address space (large, mostly
			// reserved) may not grow any more.
			lim := &syscall.Rlimit{Cur: spec.AddressSpace, Max: spec.AddressSpace}
			if err := syscall.Setrlimit(syscall.RLIMIT_AS, lim); err != nil {
				fail(exitSetupFailed, "memory limit: %v", err)
			}
		}
		err := syscall.Exec(path, spec.Argv, os.Environ())
		fail(exitCannotRun, "exec: %q: %v", spec.Argv[0], err)
	}
	supervise(startChild(path, spec.Argv, spec.AddressSpace, status, fail))
	return nil
}

func unwrapExec(err error) error {
	var e *exec.Error
	if errors.As(err, &e) {
		return e.Err
	}
	return err
}

// startChild starts the command as a child of pod-init, with its address-space limit
// if it has one, and closes the status pipe.
func startChild(path string, argv []string, limit uint64, status *os.File, fail func(int, string, ...any)) int {
	// Registered before the child exists, so that no signal meant for it is lost.
	sigs = make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2)
	// The limit cannot be set in pod-init itself, whose Go runtime would then fail to
	// start a thread, nor between fork and exec. So the child starts traced: the kernel
	// stops it right after the exec, before the command's first instruction; pod-init
	// sets the limit and lets it go. Ptrace requests come from the tracing thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	proc, err := os.StartProcess(path, argv, &os.ProcAttr{
		Env:   os.Environ(),
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Ptrace: limit > 0},
	})
	if err != nil {
		fail(exitCannotRun, "exec: %q: %v", argv[0], err)
	}
	if limit > 0 {
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(proc.Pid, &ws, 0, nil); err != nil || !ws.Stopped() {
			fail(exitSetupFailed, "starting the command under its memory limit: %v (%v)", err, ws)
		}
		lim := syscall.Rlimit{Cur: limit, Max: limit}
		if _, _, e := syscall.RawSyscall6(syscall.SYS_PRLIMIT64, uintptr(proc.Pid), syscall.RLIMIT_AS,
			uintptr(unsafe.Pointer(&lim)), 0, 0, 0); e != 0 {
			_ = proc.Kill()
			fail(exitSetupFailed, "memory limit: %v", e)
		}
		if err := syscall.PtraceDetach(proc.Pid); err != nil {
			_ = proc.Kill()
			fail(exitSetupFailed, "starting the command under its memory limit: %v", err)
		}
	}
	status.Close()
	return proc.Pid
}

var sigs chan os.Signal

// supervise keeps pod-init as PID 1 of the pod's PID namespace while the command
// runs: it passes termination signals on to the command, reaps orphans, and exits with
// the command's status. When it exits the kernel kills every process left in the
// namespace, as a container runtime does when the main process ends.
func supervise(child int) {
	go func() {
		for sig := range sigs {
			_ = syscall.Kill(child, sig.(syscall.Signal))
		}
	}()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			// No children left, which cannot happen before the command's own exit.
			os.Exit(exitSetupFailed)
		}
		if pid != child {
			continue
		}
		switch {
		case ws.Exited():
			os.Exit(ws.ExitStatus())
		case ws.Signaled():
			os.Exit(128 + int(ws.Signal()))
		}
	}
}

// setUpNamespaces runs in pod-init's own mount and UTS namespaces, as PID 1 of its
// PID namespace, before the command starts.
func setUpNamespaces(spec *initSpec) error {
	// Nothing mounted here may reach the host's mount table.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	// A /proc of the pod's PID namespace, so that the PIDs the command sees are its own.
	if err := syscall.Mount("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mounting /proc: %w", err)
	}
	if spec.Hostname != "" {
		if err := syscall.Sethostname([]byte(spec.Hostname)); err != nil {
			return fmt.Errorf("setting the hostname: %w", err)
		}
	}
	m := &mounter{stage: spec.Stage, podDir: spec.PodDir}
	mounts, err := openSources(spec.Mounts)
	if err != nil {
		return err
	}
	for _, mnt := range hidingLast(mounts, spec.PodDir) {
		if err := m.mount(mnt); err != nil {
			return fmt.Errorf("mounting %s: %w", mnt.Target, err)
		}
	}
	return nil
}

// openSources opens every bind source before anything is mounted and names it by its
// /proc/self/fd link from then on: a mount may hide the path of another's source (an
// emptyDir at /tmp hides a node state directory under /tmp). The descriptors are
// close-on-exec, so the command never sees them.
func openSources(mounts []initMount) ([]initMount, error) {
	out := make([]initMount, len(mounts))
	for i, mnt := range mounts {
		out[i] = mnt
		if mnt.Source == "" {
			continue
		}
		fd, err := syscall.Open(mnt.Source, unix.O_PATH|syscall.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("mounting %s: opening %s: %w", mnt.Target, mnt.Source, err)
		}
		out[i].origin = mnt.Source
		out[i].Source = fmt.Sprintf("/proc/self/fd/%d", fd)
	}
	return out, nil
}

// hidingLast moves the mounts that would hide the pod's own directory (where shadowing
// stages its tmpfs), and those inside them, after all others, keeping their order.
func hidingLast(mounts []initMount, podDir string) []initMount {
	if podDir == "" {
		return mounts
	}
	var first, last []initMount
	var hiding []string
	for _, mnt := range mounts {
		target := filepath.Clean(mnt.Target)
		inside := isUnder(podDir, target)
		for _, h := range hiding {
			inside = inside || isUnder(target, h)
		}
		if inside {
			hiding = append(hiding, target)
			last = append(last, mnt)
		} else {
			first = append(first, mnt)
		}
	}
	return append(first, last...)
}

// mounter makes the pod's mounts. A mount point that does not exist on the host
// (/var/run/secrets/..., /dev/termination-log) cannot be created there: the host must
// not change. Instead the nearest existing directory above it is shadowed, in this
// mount namespace only, by a tmpfs that holds a bind mount of each of its entries plus
// the new mount point.
type mounter struct {
	stage  string
	podDir string
	done   []mounted
}

// mounted is a mount the mounter made. Owned mounts are the pod's own (a shadow tmpfs,
// a volume): mount points may be created in them.
type mounted struct {
	target string
	dev    uint64
	owned  bool
}

func (m *mounter) record(target string, owned bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(target, &st); err == nil {
		m.done = append(m.done, mounted{target: target, dev: uint64(st.Dev), owned: owned})
	}
}

func (m *mounter) mount(mnt initMount) error {
	target := filepath.Clean(mnt.Target)
	isDir := true
	if mnt.Source != "" {
		st, err := os.Stat(mnt.Source)
		if err != nil {
			return err
		}
		isDir = st.IsDir()
	}
	target, err := m.mountPoint(target, isDir)
	if err != nil {
		return err
	}
	if mnt.Source == "" {
		opts := "mode=0777"
		if mnt.TmpfsSize > 0 {
			opts += fmt.Sprintf(",size=%d", mnt.TmpfsSize)
		}
		if err := syscall.Mount("tmpfs", target, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
			return err
		}
	} else if err := syscall.Mount(mnt.Source, target, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return err
	}
	if mnt.ReadOnly {
		flags := uintptr(syscall.MS_BIND | syscall.MS_REMOUNT | syscall.MS_RDONLY)
		if err := syscall.Mount("", target, "", flags, ""); err != nil {
			return fmt.Errorf("making it read-only: %w", err)
		}
	}
	origin := mnt.origin
	if origin == "" {
		origin = mnt.Source
	}
	owned := mnt.Source == "" || (m.podDir != "" && isUnder(origin, m.podDir))
	m.record(target, owned && isDir)
	return nil
}

func isUnder(path, dir string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// mountPoint returns the real path of target (symlinks resolved), creating it, as a
// directory or an empty file, where it is missing.
func (m *mounter) mountPoint(target string, isDir bool) (string, error) {
	// The nearest ancestor (or target itself) that exists.
	existing := target
	var missing []string
	for {
		if _, err := os.Stat(existing); err == nil {
			break
		}
		missing = append([]string{filepath.Base(existing)}, missing...)
		parent := filepath.Dir(existing)
		if parent == existing {
			return "", fmt.Errorf("no existing ancestor")
		}
		existing = parent
	}
	real, err := filepath.EvalSymlinks(existing)
	if err != nil {
		return "", err
	}
	if len(missing) == 0 {
		return real, nil
	}
	if !m.owned(real) {
		if err := m.shadow(real); err != nil {
			return "", fmt.Errorf("shadowing %s: %w", real, err)
		}
	}
	path := real
	for i, name := range missing {
		path = filepath.Join(path, name)
		// A dangling symlink copied into the shadow gives way to the mount point.
		if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSymlink != 0 {
			if err := os.Remove(path); err != nil {
				return "", err
			}
		}
		if i == len(missing)-1 && !isDir {
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return "", err
			}
			f.Close()
		} else if err := os.Mkdir(path, 0o755); err != nil && !os.IsExist(err) {
			return "", err
		}
	}
	return path, nil
}

// owned reports whether dir lies in a mount of the pod's own, on that mount's file
// system (not in a host directory bound below it), so that new entries change nothing
// on the host.
func (m *mounter) owned(dir string) bool {
	var best *mounted
	for i := range m.done {
		d := &m.done[i]
		if isUnder(dir, d.target) && (best == nil || len(d.target) > len(best.target)) {
			best = d
		}
	}
	if best == nil || !best.owned {
		return false
	}
	var st syscall.Stat_t
	return syscall.Stat(dir, &st) == nil && uint64(st.Dev) == best.dev
}

// shadow replaces dir, in this mount namespace, by a tmpfs holding the same entries:
// sub-directories and files are bind mounts of the originals, symlinks are copied.
func (m *mounter) shadow(dir string) error {
	if m.stage == "" {
		return fmt.Errorf("no staging directory")
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	stage := m.stage
	if err := syscall.Mount("tmpfs", stage, "tmpfs", syscall.MS_NOSUID, fmt.Sprintf("mode=%o", st.Mode().Perm()|modeBits(st.Mode()))); err != nil {
		return fmt.Errorf("tmpfs: %w", err)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		_ = os.Lchown(stage, int(sys.Uid), int(sys.Gid))
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, name := range names {
		src := filepath.Join(dir, name)
		dst := filepath.Join(stage, name)
		fi, err := os.Lstat(src)
		if err != nil {
			continue // gone meanwhile
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			link, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, dst); err != nil {
				return err
			}
			continue
		case fi.IsDir():
			if err := os.Mkdir(dst, 0o755); err != nil {
				return err
			}
		default:
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			f.Close()
		}
		if err := syscall.Mount(src, dst, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
			return fmt.Errorf("binding %s: %w", src, err)
		}
	}
	// A recursive bind of an entry that holds the staging directory copied the
	// half-built tmpfs into itself; that copy is not wanted.
	if rel, err := filepath.Rel(dir, stage); err == nil && !strings.HasPrefix(rel, "..") && rel != "." {
		_ = syscall.Unmount(filepath.Join(stage, rel), syscall.MNT_DETACH)
	}
	if dir == "/" {
		// The new root replaces the old one, as switch_root does.
		if err := os.Chdir(stage); err != nil {
			return err
		}
		if err := syscall.Mount(stage, "/", "", syscall.MS_MOVE, ""); err != nil {
			return fmt.Errorf("moving to /: %w", err)
		}
		if err := syscall.Chroot("."); err != nil {
			return err
		}
		if err := os.Chdir("/"); err != nil {
			return err
		}
	} else if err := syscall.Mount(stage, dir, "", syscall.MS_MOVE, ""); err != nil {
		return fmt.Errorf("moving into place: %w", err)
	}
	m.record(dir, true)
	return nil
}

// modeBits turns the sticky, setgid and setuid bits of mode into their octal bits.
func modeBits(mode os.FileMode) os.FileMode {
	var bits os.FileMode
	if mode&os.ModeSticky != 0 {
		bits |= 0o1000
	}
	if mode&os.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if mode&os.ModeSetuid != 0 {
		bits |= 0o4000
	}
	return bits
}
