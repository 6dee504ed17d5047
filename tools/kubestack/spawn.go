package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"k8s.io/klog/v2"
)

// spawner starts pod processes from one OS thread that never exits: the kernel sends a
// child's parent-death signal (Pdeathsig) when the thread that forked it ends, not the
// process, and Go may end other threads.
type spawner struct {
	reqs chan spawnReq
}

type spawnReq struct {
	cmd   *exec.Cmd
	reply chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq)}
	go func() {
		runtime.LockOSThread() // and never unlocked: the thread lives as long as the node
		for r := range s.reqs {
			r.reply <- r.cmd.Start()
		}
	}()
	return s
}

// start starts cmd with a status pipe as its file descriptor 3 and returns the pipe's
// reading end.
func (s *spawner) start(cmd *exec.Cmd) (*exec.Cmd, *os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cmd.ExtraFiles = []*os.File{w}
	reply := make(chan error)
	s.reqs <- spawnReq{cmd: cmd, reply: reply}
	err = <-reply
	w.Close()
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	return cmd, r, nil
}

// chooseNamespaces decides whether pods get their own PID, mount and UTS namespaces:
// it starts pod-init in them once, with a tmpfs mount, to see that the kernel allows it
// (it needs root, or CAP_SYS_ADMIN, and no seccomp filter against it).
func chooseNamespaces(mode string, sp *spawner, rootDir string) (bool, error) {
	switch mode {
	case "off":
		klog.Infof("pods run without namespaces of their own (--namespaces=off)")
		return false, nil
	case "on", "auto":
	default:
		return false, fmt.Errorf("--namespaces: want auto, on or off, not %q", mode)
	}
	err := probeNamespaces(sp, rootDir)
	if err == nil {
		klog.Infof("pods run in their own PID, mount and UTS namespaces")
		return true, nil
	}
	if mode == "on" {
		return false, fmt.Errorf("pods cannot get namespaces of their own: %w", err)
	}
	klog.Warningf("pods run without namespaces of their own: %v", err)
	return false, nil
}

func probeNamespaces(sp *spawner, rootDir string) error {
	dir, err := os.MkdirTemp(rootDir, ".probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	target := filepath.Join(dir, "mnt")
	if err := os.Mkdir(target, 0o755); err != nil {
		return err
	}
	spec := initSpec{
		Argv: []string{"/proc/self/exe", "pod-init", "--exit"}, Namespaces: true, Hostname: "probe",
		Stage: dir, Mounts: []initMount{{Target: target}},
	}
	raw, _ := json.Marshal(spec)
	specPath := filepath.Join(dir, "init.json")
	if err := os.WriteFile(specPath, raw, 0o600); err != nil {
		return err
	}
	p := &processProvider{namespaces: true}
	cmd, status, err := sp.start(p.initCommand(specPath, []string{"PATH=" + defaultPath}, io.Discard, io.Discard))
	if err != nil {
		return err
	}
	failure, _ := io.ReadAll(status)
	status.Close()
	werr := cmd.Wait()
	if len(failure) > 0 {
		return fmt.Errorf("%s", failure)
	}
	return werr
}
