package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/virtual-kubelet/virtual-kubelet/errdefs"
	"github.com/virtual-kubelet/virtual-kubelet/node"
	"github.com/virtual-kubelet/virtual-kubelet/node/api"
	"github.com/virtual-kubelet/virtual-kubelet/node/nodeutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *logDir == "" {
		return fmt.Errorf("--log-dir is required")
	}
	if err := os.MkdirAll(*logDir, 0o755); err != nil {
		return err
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
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
	mux := http.NewServeMux()
	var prov *processProvider
	n, err := nodeutil.NewNode(*name,
		func(cfg nodeutil.ProviderConfig) (nodeutil.Provider, node.NodeProvider, error) {
			prov = newProcessProvider(*name, *logDir)
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
	go func() {
		<-ctx.Done()
		if prov != nil {
			prov.killAll()
		}
	}()
	return n.Run(ctx)
}

// process is one pod's container, running as a local process group.
type process struct {
	pod     *corev1.Pod
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

// processProvider implements the virtual-kubelet provider by running processes.
type processProvider struct {
	nodeName string
	logDir   string
	mu       sync.Mutex
	pods     map[string]*process
	notify   func(*corev1.Pod)
}

func newProcessProvider(nodeName, logDir string) *processProvider {
	return &processProvider{nodeName: nodeName, logDir: logDir, pods: map[string]*process{}}
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

func (p *processProvider) CreatePod(_ context.Context, pod *corev1.Pod) error {
	pod = pod.DeepCopy()
	if len(pod.Spec.Containers) == 0 {
		return errdefs.InvalidInput("pod has no containers")
	}
	c := pod.Spec.Containers[0]
	argv := append(append([]string{}, c.Command...), c.Args...)
	now := metav1.Now()
	pod.Status.StartTime = &now
	pod.Status.HostIP = "127.0.0.1"
	pod.Status.PodIP = "127.0.0.1"
	pod.Status.PodIPs = []corev1.PodIP{{IP: "127.0.0.1"}}
	logPath := filepath.Join(p.logDir, fmt.Sprintf("%s_%s_%s.log", pod.Namespace, pod.Name, c.Name))
	proc := &process{pod: pod, logPath: logPath, done: make(chan struct{})}
	p.mu.Lock()
	p.pods[podKey(pod.Namespace, pod.Name)] = proc
	p.mu.Unlock()
	if len(argv) == 0 {
		p.finish(proc, 128, "ContainerCannotRun", "the container has no command: the node runs commands, not images")
		return nil
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = os.Environ()
	for _, e := range c.Env {
		// The pod controller resolved downward-API, secret and config map references.
		cmd.Env = append(cmd.Env, e.Name+"="+e.Value)
	}
	cmd.Dir = c.WorkingDir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	proc.cmd = cmd
	if err := cmd.Start(); err != nil {
		logFile.Close()
		p.finish(proc, 127, "StartError", err.Error())
		return nil
	}
	p.setRunning(proc)
	go func() {
		err := cmd.Wait()
		logFile.Close()
		code := 0
		if err != nil {
			code = 1
			if exit, ok := err.(*exec.ExitError); ok {
				if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					code = 128 + int(ws.Signal())
				} else {
					code = exit.ExitCode()
				}
			}
		}
		reason := "Completed"
		if code != 0 {
			reason = "Error"
		}
		p.finish(proc, int32(code), reason, "")
	}()
	return nil
}

func (p *processProvider) setRunning(proc *process) {
	p.mu.Lock()
	pod := proc.pod
	c := pod.Spec.Containers[0]
	started := metav1.Now()
	pod.Status.Phase = corev1.PodRunning
	pod.Status.Conditions = conditions(corev1.ConditionTrue)
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
	pod.Status.Conditions = conditions(corev1.ConditionFalse)
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

func conditions(ready corev1.ConditionStatus) []corev1.PodCondition {
	now := metav1.Now()
	return []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: ready, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: ready, LastTransitionTime: now},
	}
}

func boolPtr(b bool) *bool { return &b }

func (p *processProvider) UpdatePod(context.Context, *corev1.Pod) error { return nil }

// DeletePod stops the pod's process group: SIGTERM, then SIGKILL after the grace period.
func (p *processProvider) DeletePod(_ context.Context, pod *corev1.Pod) error {
	key := podKey(pod.Namespace, pod.Name)
	p.mu.Lock()
	proc, ok := p.pods[key]
	p.mu.Unlock()
	if !ok {
		return errdefs.NotFound("pod not found")
	}
	grace := 30 * time.Second
	if pod.DeletionGracePeriodSeconds != nil {
		grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
	} else if pod.Spec.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	}
	if proc.cmd != nil && proc.cmd.Process != nil {
		pgid := proc.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-proc.done:
		case <-time.After(grace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			select {
			case <-proc.done:
			case <-time.After(10 * time.Second):
			}
		}
	}
	p.finish(proc, 137, "Killed", "the pod was deleted")
	p.mu.Lock()
	delete(p.pods, key)
	p.mu.Unlock()
	return nil
}

func (p *processProvider) killAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, proc := range p.pods {
		if proc.cmd != nil && proc.cmd.Process != nil {
			_ = syscall.Kill(-proc.cmd.Process.Pid, syscall.SIGKILL)
		}
	}
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
