package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// runNode registers a node and runs the pods scheduled to it as local processes.
func runNode(args []string) error {
	fs := flag.NewFlagSet("node", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig of the API server")
	name := fs.String("name", "kubestack-node", "node name")
	logDir := fs.String("log-dir", "", "where container logs are written")
	port := fs.Int("port", 10250, "HTTPS port on 127.0.0.1 for the log API")
	cpu := fs.String("cpu", "4", "allocatable CPU")
	memory := fs.String("memory", "8Gi", "allocatable memory")
	pods := fs.String("pods", "110", "allocatable pods")
	certFile := fs.String("tls-cert", "", "serving certificate for the log API (PEM)")
	keyFile := fs.String("tls-key", "", "its private key (PEM)")
	rootDir := fs.String("root-dir", "", "where each pod's directory (home, volumes, termination log) is made; default: pods/ next to --log-dir")
	namespaces := fs.String("namespaces", "auto", "run each pod in its own PID, mount and UTS namespaces: auto (when the node may), on or off")
	memoryLimits := fs.Bool("memory-limits", true, "enforce each container's limits.memory as its address-space limit (RLIMIT_AS)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *logDir == "" {
		return fmt.Errorf("--log-dir is required")
	}
	if err := os.MkdirAll(*logDir, 0o755); err != nil {
		return err
	}
	if *rootDir == "" {
		*rootDir = filepath.Join(filepath.Dir(filepath.Clean(*logDir)), "pods")
	}
	if err := os.MkdirAll(*rootDir, 0o755); err != nil {
		return err
	}
	removeStalePodDirs(*rootDir)
	restCfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	// client-go's default of 5 requests/s (burst 10) holds a busy node to about two pod
	// starts a second: each start is a status update or two and an event.
	restCfg.QPS = 100
	restCfg.Burst = 200
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return err
	}
	pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return fmt.Errorf("loading the serving certificate: %w", err)
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(*cpu),
		corev1.ResourceMemory: resource.MustParse(*memory),
		corev1.ResourcePods:   resource.MustParse(*pods),
	}
	apiURL, err := url.Parse(restCfg.Host)
	if err != nil {
		return fmt.Errorf("the API server's address %q: %w", restCfg.Host, err)
	}
	apiPort := apiURL.Port()
	if apiPort == "" {
		apiPort = "443"
	}
	sp := newSpawner()
	useNS, err := chooseNamespaces(*namespaces, sp, *rootDir)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	var prov *processProvider
	n, err := nodeutil.NewNode(*name,
		func(cfg nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
			prov = &processProvider{
				nodeName: *name, logDir: *logDir, rootDir: *rootDir, client: client,
				apiHost: apiURL.Hostname(), apiPort: apiPort, allocatable: capacity,
				namespaces: useNS, memoryLimits: *memoryLimits, spawner: sp,
				pods: map[string]*process{},
			}
			cfg.Node.Status.Capacity = capacity
			cfg.Node.Status.Allocatable = capacity
			cfg.Node.Status.Addresses = []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: "127.0.0.1"},
				{Type: corev1.NodeHostName, Address: *name},
			}
			cfg.Node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(*port)
			cfg.Node.Status.NodeInfo.OperatingSystem = "linux"
			cfg.Node.Status.NodeInfo.Architecture = "amd64"
			cfg.Node.Status.NodeInfo.KubeletVersion = "v1.35.4"
			return prov, nil, nil
		},
		nodeutil.WithClient(client),
		nodeutil.AttachProviderRoutes(mux),
		func(cfg *nodeutil.NodeConfig) error {
			cfg.HTTPListenAddr = fmt.Sprintf("127.0.0.1:%d", *port)
			cfg.Handler = mux
			cfg.InformerResyncPeriod = 30 * time.Second
			cfg.NumWorkers = 4
			cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
			return nil
		},
	)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	if prov != nil {
		go prov.watchConfigErrors(ctx, time.Second)
	}
	stopped := make(chan struct{})
	go func() {
		<-ctx.Done()
		if prov != nil {
			prov.shutdown()
		}
		close(stopped)
	}()
	err = n.Run(ctx)
	// Whatever ended the node, its pods end with it, before it exits.
	cancel()
	<-stopped
	return err
}

var podUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// removeStalePodDirs removes the directories of pods an earlier run of the node left
// (killed, it could not clean up): their processes died with it, and a pod the API
// server still has gets a new directory or is reported lost.
func removeStalePodDirs(rootDir string) {
	entries, err := os.ReadDir(rootDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		// Named by pod UID; nothing else in the directory is touched.
		if !podUID.MatchString(e.Name()) || !e.IsDir() {
			continue
		}
		if err := os.RemoveAll(filepath.Join(rootDir, e.Name())); err != nil {
			klog.Warningf("removing a stale pod directory: %v", err)
		}
	}
}

// process is one pod's container, running as a local process group.
type process struct {
	pod     *corev1.Pod
	dir     string // the pod's own directory: home, volumes, termination log
	logPath string
	termLog string // the termination-message file, on the host
	ctx     context.Context
	cancel  context.CancelFunc
	cmd     *exec.Cmd
	started chan struct{} // closed once pod-init reported (and handles signals), or never will
	exited  chan struct{} // closed once the process has been waited for
	done    chan struct{} // closed once the final status is set
	// others are the pod's conditions that are not the node's to set (DisruptionTarget
	// from an eviction or a preemption): reported back with every status, as a
	// kubelet keeps them, rather than erased by it.
	others []corev1.PodCondition
}

// processProvider implements the virtual-kubelet provider by running processes.
type processProvider struct {
	nodeName     string
	logDir       string
	rootDir      string
	client       kubernetes.Interface
	apiHost      string
	apiPort      string
	allocatable  corev1.ResourceList
	namespaces   bool
	memoryLimits bool
	spawner      *spawner
	mu           sync.Mutex
	pods         map[string]*process
	notify       func(*corev1.Pod)
	stopping     bool
}

func podKey(namespace, name string) string { return namespace + "/" + name }

func (p *processProvider) NotifyPods(_ context.Context, cb func(*corev1.Pod)) {
	p.mu.Lock()
	p.notify = cb
	p.mu.Unlock()
}

func (p *processProvider) publish(pod *corev1.Pod) {
	p.mu.Lock()
	cb := p.notify
	p.mu.Unlock()
	if cb != nil {
		cb(pod.DeepCopy())
	}
}

// CreatePod registers the pod as ContainerCreating and starts it in the background:
// its volumes may have to wait for a Secret or ConfigMap, as with a kubelet. A pod
// that an earlier run of the node started is reported lost instead (reportLost).
func (p *processProvider) CreatePod(_ context.Context, pod *corev1.Pod) error {
	pod = pod.DeepCopy()
	if len(pod.Spec.Containers) == 0 {
		return errdefs.InvalidInput("pod has no containers")
	}
	c := pod.Spec.Containers[0]
	others := othersConditions(pod.Status.Conditions)
	var lost *corev1.ContainerStatus
	if was := lostContainer(pod); was != nil {
		lost = was.DeepCopy()
	}
	now := metav1.Now()
	if pod.Status.StartTime == nil || lost == nil {
		pod.Status.StartTime = &now
	}
	pod.Status.HostIP = "127.0.0.1"
	pod.Status.HostIPs = []corev1.HostIP{{IP: "127.0.0.1"}}
	pod.Status.PodIP = "127.0.0.1"
	pod.Status.PodIPs = []corev1.PodIP{{IP: "127.0.0.1"}}
	pod.Status.Phase = corev1.PodPending
	pod.Status.Conditions = conditions(corev1.ConditionFalse, others)
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: c.Name, Image: c.Image, Started: boolPtr(false),
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	proc := &process{
		pod:     pod,
		dir:     filepath.Join(p.rootDir, string(pod.UID)),
		logPath: filepath.Join(p.logDir, fmt.Sprintf("%s_%s_%s.log", pod.Namespace, pod.Name, c.Name)),
		ctx:     ctx, cancel: cancel,
		started: make(chan struct{}), exited: make(chan struct{}), done: make(chan struct{}),
		others: others,
	}
	proc.termLog = filepath.Join(proc.dir, "termination-log")
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		cancel()
		return errdefs.InvalidInput("the node is stopping")
	}
	p.pods[podKey(pod.Namespace, pod.Name)] = proc
	p.mu.Unlock()
	if lost != nil {
		p.reportLost(proc, lost)
		return nil
	}
	p.publish(pod)
	go p.run(proc)
	return nil
}

// lostContainer is the container status an earlier run of this node reported running
// (or started) for a pod whose process died with that node, when the pod's restart
// policy is Never; nil when the pod is to be run now.
func lostContainer(pod *corev1.Pod) *corev1.ContainerStatus {
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		return nil // a kubelet starts the container again
	}
	for i := range pod.Status.ContainerStatuses {
		cs := &pod.Status.ContainerStatuses[i]
		if cs.State.Running != nil || (cs.Started != nil && *cs.Started) {
			return cs
		}
	}
	return nil
}

// reportLost ends a pod that an earlier run of this node started and whose process is
// gone (a killed or restarted node takes its pods' processes with it), as a kubelet
// does for a restartPolicy Never pod whose container it cannot find: Failed, the
// container terminated with ContainerStatusUnknown and 137. Running its command again
// under the same pod would run a task attempt twice.
func (p *processProvider) reportLost(proc *process, was *corev1.ContainerStatus) {
	klog.Warningf("pod %s/%s: its process did not outlive an earlier run of the node; reporting it Failed",
		proc.pod.Namespace, proc.pod.Name)
	proc.cancel()
	close(proc.started)
	close(proc.exited)
	if err := os.RemoveAll(proc.dir); err != nil {
		klog.Warningf("removing the directory of pod %s/%s: %v", proc.pod.Namespace, proc.pod.Name, err)
	}
	p.mu.Lock()
	pod := proc.pod
	started := metav1.Now()
	if was.State.Running != nil {
		started = was.State.Running.StartedAt
	}
	pod.Status.Phase = corev1.PodFailed
	pod.Status.Conditions = conditions(corev1.ConditionFalse, proc.others)
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: was.Name, Image: was.Image, ImageID: was.ImageID, Ready: false, Started: boolPtr(false),
		ContainerID: was.ContainerID,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 137, Reason: "ContainerStatusUnknown",
			Message:   "The container could not be located when the pod was terminated",
			StartedAt: started, FinishedAt: metav1.Now(), ContainerID: was.ContainerID,
		}},
	}}
	close(proc.done)
	snapshot := pod.DeepCopy()
	p.mu.Unlock()
	p.publish(snapshot)
}

// run prepares the pod (retrying while a volume cannot be made), starts its process and
// reports its end.
func (p *processProvider) run(proc *process) {
	defer close(proc.exited)
	startedOnce := sync.OnceFunc(func() { close(proc.started) })
	defer startedOnce()
	c := proc.pod.Spec.Containers[0]
	argv := append(append([]string{}, c.Command...), c.Args...)
	if len(argv) == 0 {
		p.finish(proc, 128, "ContainerCannotRun", "the container has no command: the node runs commands, not images")
		return
	}
	var spec *initSpec
	var env []string
	lastErr := ""
	for {
		var err error
		spec, env, err = p.prepare(proc, argv)
		if err == nil {
			break
		}
		if proc.ctx.Err() != nil {
			return
		}
		if msg := err.Error(); msg != lastErr {
			lastErr = msg
			klog.Warningf("pod %s/%s: %v; retrying", proc.pod.Namespace, proc.pod.Name, err)
			p.setWaiting(proc, "ContainerCreating", msg)
		}
		select {
		case <-proc.ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
	specPath := filepath.Join(proc.dir, "init.json")
	raw, _ := json.Marshal(spec)
	if err := os.WriteFile(specPath, raw, 0o600); err != nil {
		p.finish(proc, 128, "StartError", err.Error())
		return
	}
	logFile, err := os.OpenFile(proc.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		p.finish(proc, 128, "StartError", err.Error())
		return
	}
	defer logFile.Close()
	// Under the lock, so that stop either sees the process or knows there will be none.
	p.mu.Lock()
	if proc.ctx.Err() != nil {
		p.mu.Unlock()
		return
	}
	cmd, status, err := p.spawner.start(p.initCommand(specPath, env, logFile, logFile))
	if err == nil {
		proc.cmd = cmd
	}
	p.mu.Unlock()
	if err != nil {
		p.finish(proc, 128, "StartError", err.Error())
		return
	}
	// pod-init closes the pipe once the command runs, or writes why it cannot.
	failure, _ := io.ReadAll(status)
	status.Close()
	startedOnce()
	if len(failure) == 0 {
		p.setRunning(proc)
	}
	code := exitCode(cmd.Wait())
	if !p.namespaces {
		// Without a PID namespace nothing ends the processes the command left behind
		// in its group: end them, as a container's end does.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	logFile.Close()
	if len(failure) > 0 {
		p.finish(proc, int32(code), "StartError", string(failure))
		return
	}
	reason := "Completed"
	if code != 0 {
		reason = "Error"
	}
	p.finish(proc, int32(code), reason, terminationMessage(proc, code))
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if exit, ok := err.(*exec.ExitError); ok {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return exit.ExitCode()
	}
	return 1
}

// prepare makes the pod's directory, volumes and environment, and the spec pod-init
// starts the command with.
func (p *processProvider) prepare(proc *process, argv []string) (*initSpec, []string, error) {
	pod := proc.pod
	c := pod.Spec.Containers[0]
	home := filepath.Join(proc.dir, "home")
	stage := filepath.Join(proc.dir, "stage")
	for _, d := range []string{home, stage} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, nil, err
		}
	}
	// World-writable, as the kubelet makes it, so that a process of any user can
	// write its message.
	if err := os.WriteFile(proc.termLog, nil, 0o666); err != nil {
		return nil, nil, err
	}
	if err := os.Chmod(proc.termLog, 0o666); err != nil {
		return nil, nil, err
	}
	w := &volumeWriter{client: p.client, pod: pod, allocatable: p.allocatable, tmpfs: p.namespaces}
	vols, err := w.prepare(proc.ctx, proc.dir)
	if err != nil {
		return nil, nil, err
	}
	spec := &initSpec{
		Argv: argv, Dir: c.WorkingDir, Namespaces: p.namespaces,
		Hostname: podHostname(pod), Stage: stage, PodDir: proc.dir,
	}
	readOnlyKinds := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		// The kubelet mounts these read-only whatever the volumeMount says.
		if v.Secret != nil || v.ConfigMap != nil || v.DownwardAPI != nil || v.Projected != nil {
			readOnlyKinds[v.Name] = true
		}
	}
	for _, vm := range c.VolumeMounts {
		vol, ok := vols[vm.Name]
		if !ok {
			return nil, nil, fmt.Errorf("volume mount %q: the pod has no such volume", vm.Name)
		}
		m := initMount{Source: vol.hostPath, Target: vm.MountPath, TmpfsSize: vol.tmpfsSize,
			ReadOnly: vm.ReadOnly || readOnlyKinds[vm.Name]}
		if vm.SubPath != "" {
			if vol.hostPath == "" {
				return nil, nil, fmt.Errorf("volume mount %q: subPath of a memory-backed emptyDir is not supported", vm.Name)
			}
			m.Source = filepath.Join(vol.hostPath, vm.SubPath)
			if _, err := os.Stat(m.Source); os.IsNotExist(err) {
				if err := os.MkdirAll(m.Source, 0o777); err != nil {
					return nil, nil, err
				}
			}
		}
		spec.Mounts = append(spec.Mounts, m)
	}
	if p.namespaces {
		// The pod's host name resolves, as in the hosts file the kubelet writes.
		hosts, hostname := filepath.Join(proc.dir, "hosts"), filepath.Join(proc.dir, "hostname")
		if err := os.WriteFile(hosts, hostsFile(pod, spec.Hostname), 0o644); err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(hostname, []byte(spec.Hostname+"\n"), 0o644); err != nil {
			return nil, nil, err
		}
		spec.Mounts = append(spec.Mounts,
			initMount{Source: hosts, Target: "/etc/hosts"},
			initMount{Source: hostname, Target: "/etc/hostname"})
	}
	extra := map[string]string{}
	if c.TerminationMessagePath != "" {
		spec.Mounts = append(spec.Mounts, initMount{Source: proc.termLog, Target: c.TerminationMessagePath})
	}
	sortedMounts(spec.Mounts)
	if !p.namespaces {
		// No mount namespace: the pod finds its files through these instead.
		root, err := linkTree(proc.dir, spec.Mounts)
		if err != nil {
			return nil, nil, err
		}
		extra["KUBESTACK_ROOT"] = root
		extra["KUBESTACK_TERMINATION_LOG"] = proc.termLog
		spec.Mounts = nil
	}
	if p.memoryLimits {
		if lim, ok := c.Resources.Limits[corev1.ResourceMemory]; ok && lim.Value() > 0 {
			spec.AddressSpace = uint64(lim.Value())
		}
	}
	// virtual-kubelet drops resourceFieldRef variables; the pod as stored has them.
	orig, err := p.client.CoreV1().Pods(pod.Namespace).Get(proc.ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		orig = nil
	}
	env := podEnvironment(pod, orig, home, spec.Hostname, p.apiHost, p.apiPort, p.allocatable, extra)
	for _, refresh := range w.refreshers {
		go refresh(proc.ctx)
	}
	return spec, env, nil
}

// hostsFile is the pod's /etc/hosts: the node's (pods share its network, as
// hostNetwork pods do), the pod's host name and its hostAliases.
func hostsFile(pod *corev1.Pod, hostname string) []byte {
	var b bytes.Buffer
	b.WriteString("# Kubernetes-managed hosts file (host network).\n")
	if host, err := os.ReadFile("/etc/hosts"); err == nil {
		b.Write(host)
		if len(host) > 0 && host[len(host)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	fmt.Fprintf(&b, "127.0.0.1\t%s\n", hostname)
	for _, alias := range pod.Spec.HostAliases {
		fmt.Fprintf(&b, "%s\t%s\n", alias.IP, strings.Join(alias.Hostnames, "\t"))
	}
	return b.Bytes()
}

// linkTree lays out, under dir/root, a symlink at each mount's path to its source, for
// nodes where pods get no mount namespace.
func linkTree(dir string, mounts []initMount) (string, error) {
	root := filepath.Join(dir, "root")
	if err := os.RemoveAll(root); err != nil {
		return "", err
	}
	for _, m := range mounts {
		link := filepath.Join(root, m.Target)
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return "", err
		}
		src := m.Source
		if src == "" {
			continue
		}
		if err := os.Symlink(src, link); err != nil {
			return "", err
		}
	}
	return root, nil
}

// initCommand is `kubestack pod-init SPEC`, started in the pod's namespaces.
func (p *processProvider) initCommand(specPath string, env []string, stdout, stderr io.Writer) *exec.Cmd {
	// /proc/self/exe: the node's own binary, even if a rebuild replaced the file.
	cmd := exec.Command("/proc/self/exe", "pod-init", specPath)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the node dies, so do its pods.
		Pdeathsig: syscall.SIGKILL,
	}
	if p.namespaces {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWPID
		cmd.SysProcAttr.Unshareflags = syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS
	}
	return cmd
}

// terminationMessage is what the kubelet reports as state.terminated.message: the end
// of the termination-message file, or with FallbackToLogsOnError and a failure that
// left it empty, the end of the log.
func terminationMessage(proc *process, code int) string {
	c := proc.pod.Spec.Containers[0]
	if c.TerminationMessagePath == "" {
		return ""
	}
	msg := tailBytes(proc.termLog, maxTerminationMessage)
	if len(msg) == 0 && code != 0 && c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
		msg = logTail(proc.logPath, maxTerminationLogLines, maxTerminationLogBytes)
	}
	return string(msg)
}

// The kubelet's limits (pkg/kubelet/container: MaxContainerTerminationMessageLength,
// MaxContainerTerminationMessageLogLines, MaxContainerTerminationMessageLogLength).
const (
	maxTerminationMessage  = 4096
	maxTerminationLogLines = 80
	maxTerminationLogBytes = 2048
)

func tailBytes(path string, n int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil
	}
	off := st.Size() - n
	if off < 0 {
		off = 0
	}
	data, _ := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	return data
}

// logTail is the last lines of a log, then at most its last limit bytes.
func logTail(path string, lines, limit int) []byte {
	data := tailBytes(path, 1<<20)
	end := len(data)
	if end > 0 && data[end-1] == '\n' {
		end--
	}
	start := 0
	for i, n := end-1, 0; i >= 0; i-- {
		if data[i] == '\n' {
			n++
			if n == lines {
				start = i + 1
				break
			}
		}
	}
	data = data[start:]
	if len(data) > limit {
		data = data[len(data)-limit:]
	}
	return data
}

func (p *processProvider) setWaiting(proc *process, reason, message string) {
	p.mu.Lock()
	select {
	case <-proc.done:
		p.mu.Unlock()
		return
	default:
	}
	pod := proc.pod
	c := pod.Spec.Containers[0]
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: c.Name, Image: c.Image, Started: boolPtr(false),
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}},
	}}
	snapshot := pod.DeepCopy()
	p.mu.Unlock()
	p.publish(snapshot)
}

func (p *processProvider) setRunning(proc *process) {
	p.mu.Lock()
	select {
	case <-proc.done:
		p.mu.Unlock()
		return
	default:
	}
	pod := proc.pod
	c := pod.Spec.Containers[0]
	started := metav1.Now()
	pod.Status.Phase = corev1.PodRunning
	pod.Status.Conditions = conditions(corev1.ConditionTrue, proc.others)
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: boolPtr(true),
		ContainerID: fmt.Sprintf("process://%d", proc.cmd.Process.Pid),
		State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
	}}
	snapshot := pod.DeepCopy()
	p.mu.Unlock()
	p.publish(snapshot)
}

func (p *processProvider) finish(proc *process, code int32, reason, message string) {
	p.mu.Lock()
	pod := proc.pod
	select {
	case <-proc.done:
		p.mu.Unlock()
		return
	default:
	}
	c := pod.Spec.Containers[0]
	started := metav1.Now()
	if len(pod.Status.ContainerStatuses) == 1 && pod.Status.ContainerStatuses[0].State.Running != nil {
		started = pod.Status.ContainerStatuses[0].State.Running.StartedAt
	}
	pod.Status.Phase = corev1.PodSucceeded
	if code != 0 {
		pod.Status.Phase = corev1.PodFailed
	}
	pod.Status.Conditions = conditions(corev1.ConditionFalse, proc.others)
	containerID := ""
	if proc.cmd != nil && proc.cmd.Process != nil {
		containerID = fmt.Sprintf("process://%d", proc.cmd.Process.Pid)
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: false, Started: boolPtr(false),
		ContainerID: containerID,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: code, Reason: reason, Message: message,
			StartedAt: started, FinishedAt: metav1.Now(), ContainerID: containerID,
		}},
	}}
	close(proc.done)
	snapshot := pod.DeepCopy()
	p.mu.Unlock()
	p.publish(snapshot)
}

// conditions are the node's own pod conditions, then others' (kept as they are).
func conditions(ready corev1.ConditionStatus, others []corev1.PodCondition) []corev1.PodCondition {
	now := metav1.Now()
	out := []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: ready, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: ready, LastTransitionTime: now},
	}
	for _, c := range others {
		out = append(out, *c.DeepCopy())
	}
	return out
}

// nodeConditions are the pod condition types a kubelet owns and sets itself
// (pkg/kubelet/types PodConditionsByKubelet); the others (DisruptionTarget, readiness
// gates) are set by others and only kept.
var nodeConditions = map[corev1.PodConditionType]bool{
	corev1.PodScheduled: true, corev1.PodReady: true, corev1.PodInitialized: true,
	corev1.ContainersReady: true, corev1.PodResizeInProgress: true, corev1.PodResizePending: true,
	corev1.PodReadyToStartContainers: true,
}

func othersConditions(conds []corev1.PodCondition) []corev1.PodCondition {
	var out []corev1.PodCondition
	for _, c := range conds {
		if !nodeConditions[c.Type] {
			out = append(out, *c.DeepCopy())
		}
	}
	return out
}

func boolPtr(b bool) *bool { return &b }

func (p *processProvider) UpdatePod(context.Context, *corev1.Pod) error { return nil }

// DeletePod stops the pod as the kubelet does: SIGTERM to its main process, SIGKILL to
// everything left after the grace period; then it removes the pod's directory.
func (p *processProvider) DeletePod(_ context.Context, pod *corev1.Pod) error {
	key := podKey(pod.Namespace, pod.Name)
	p.mu.Lock()
	proc, ok := p.pods[key]
	p.mu.Unlock()
	if !ok {
		return errdefs.NotFound("pod not found")
	}
	// An eviction or a preemption marks the pod (DisruptionTarget) before deleting it:
	// its final status says so, and the Job controller's podFailurePolicy reads it there.
	p.mu.Lock()
	proc.others = mergeConditions(proc.others, othersConditions(pod.Status.Conditions))
	p.mu.Unlock()
	grace := 30 * time.Second
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	} else if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	p.stop(proc, grace)
	p.finish(proc, 137, "Killed", "the pod was deleted")
	p.writeFinalStatus(proc)
	p.mu.Lock()
	delete(p.pods, key)
	p.mu.Unlock()
	return nil
}

// writeFinalStatus writes a deleted pod's final status itself, as a patch of its status
// alone, the way a kubelet's status manager does. virtual-kubelet sends every status as
// a whole pod whose metadata is the node's copy from the pod's start; once the Job
// controller has taken its tracking finalizer off the deleted pod, the API server refuses
// that pod ("no new finalizers can be added if the object is being deleted") until the
// pod is gone, and the exit code and reason of its container with it.
func (p *processProvider) writeFinalStatus(proc *process) {
	p.mu.Lock()
	ns, name := proc.pod.Namespace, proc.pod.Name
	// The UID makes it a precondition: never the status of a new pod of the same name.
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": proc.pod.UID},
		"status":   proc.pod.Status,
	})
	p.mu.Unlock()
	if err != nil {
		klog.Warningf("pod %s/%s: encoding its final status: %v", ns, name, err)
		return
	}
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = p.client.CoreV1().Pods(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
		cancel()
		if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) || apierrors.IsInvalid(err) {
			return
		}
		if attempt == 5 {
			klog.Warningf("pod %s/%s: writing its final status: %v", ns, name, err)
			return
		}
		time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
	}
}

// mergeConditions is have with each of more replacing the one of its type, or added.
func mergeConditions(have, more []corev1.PodCondition) []corev1.PodCondition {
	out := append([]corev1.PodCondition{}, have...)
	for _, c := range more {
		replaced := false
		for i := range out {
			if out[i].Type == c.Type {
				out[i], replaced = c, true
			}
		}
		if !replaced {
			out = append(out, c)
		}
	}
	return out
}

// stop ends the pod's process (within grace) and its volume work, and removes its
// directory.
func (p *processProvider) stop(proc *process, grace time.Duration) {
	proc.cancel()
	p.mu.Lock()
	cmd := proc.cmd // after cancel, run starts no process if it has not yet
	p.mu.Unlock()
	if cmd != nil {
		timeout := time.NewTimer(grace)
		defer timeout.Stop()
		expired := false
		// Until pod-init reports, it may not handle SIGTERM yet, and as PID 1 of its
		// namespace it would not even see it.
		select {
		case <-proc.started:
		case <-timeout.C:
			expired = true
		}
		if !expired {
			// pod-init passes it on to the command (or is the command, without
			// namespaces).
			_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-proc.exited:
			case <-timeout.C:
				expired = true
			}
		}
		if expired {
			// The whole group; with namespaces, pod-init's end kills the rest.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	}
	select {
	case <-proc.exited:
	case <-time.After(10 * time.Second):
		klog.Warningf("pod %s/%s: its process did not end", proc.pod.Namespace, proc.pod.Name)
	}
	if err := os.RemoveAll(proc.dir); err != nil {
		klog.Warningf("removing the directory of pod %s/%s: %v", proc.pod.Namespace, proc.pod.Name, err)
	}
}

// shutdown kills every pod at once, when the node stops.
func (p *processProvider) shutdown() {
	p.mu.Lock()
	p.stopping = true
	procs := make([]*process, 0, len(p.pods))
	for _, proc := range p.pods {
		procs = append(procs, proc)
	}
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, proc := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.stop(proc, 0)
		}()
	}
	wg.Wait()
}

func (p *processProvider) GetPod(_ context.Context, namespace, name string) (*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	proc, ok := p.pods[podKey(namespace, name)]
	if !ok {
		return nil, errdefs.NotFound("pod not found")
	}
	return proc.pod.DeepCopy(), nil
}

func (p *processProvider) GetPodStatus(ctx context.Context, namespace, name string) (*corev1.PodStatus, error) {
	pod, err := p.GetPod(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	return &pod.Status, nil
}

func (p *processProvider) GetPods(context.Context) ([]*corev1.Pod, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*corev1.Pod, 0, len(p.pods))
	for _, proc := range p.pods {
		out = append(out, proc.pod.DeepCopy())
	}
	return out, nil
}

// GetContainerLogs serves the log file the container's stdout and stderr went to.
func (p *processProvider) GetContainerLogs(_ context.Context, namespace, podName, containerName string, opts api.ContainerLogOpts) (io.ReadCloser, error) {
	p.mu.Lock()
	proc, ok := p.pods[podKey(namespace, podName)]
	p.mu.Unlock()
	if !ok {
		return nil, errdefs.NotFound("pod not found")
	}
	data, err := os.ReadFile(proc.logPath)
	if err != nil {
		return nil, errdefs.NotFound("no logs yet")
	}
	if opts.Tail > 0 {
		var lines [][]byte
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		for sc.Scan() {
			lines = append(lines, append(append([]byte{}, sc.Bytes()...), '\n'))
		}
		if len(lines) > opts.Tail {
			lines = lines[len(lines)-opts.Tail:]
		}
		data = bytes.Join(lines, nil)
	}
	if opts.LimitBytes > 0 && len(data) > opts.LimitBytes {
		data = data[:opts.LimitBytes]
	}
	return io.NopCloser(bytes.NewReader(data)), nil
}

func (p *processProvider) RunInContainer(context.Context, string, string, string, []string, api.AttachIO) error {
	return errdefs.InvalidInput("exec is not supported by kubestack nodes")
}

func (p *processProvider) AttachToContainer(context.Context, string, string, string, api.AttachIO) error {
	return errdefs.InvalidInput("attach is not supported by kubestack nodes")
}

func (p *processProvider) GetStatsSummary(context.Context) (*statsv1alpha1.Summary, error) {
	return &statsv1alpha1.Summary{Node: statsv1alpha1.NodeStats{NodeName: p.nodeName}}, nil
}

func (p *processProvider) GetMetricsResource(context.Context) ([]*dto.MetricFamily, error) {
	return nil, nil
}

func (p *processProvider) PortForward(context.Context, string, string, int32, io.ReadWriteCloser) error {
	return errdefs.InvalidInput("port-forward is not supported by kubestack nodes")
}
