package main

import (
	"os"
	"regexp"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	podresource "k8s.io/kubernetes/pkg/api/v1/resource"
)

// defaultPath is the PATH of a node started without one.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// kubernetesServiceVar matches the variables the kubelet derives from the `kubernetes`
// Service (KUBERNETES_SERVICE_HOST, KUBERNETES_PORT_443_TCP_ADDR, ...).
var kubernetesServiceVar = regexp.MustCompile(`^KUBERNETES_(SERVICE_HOST|SERVICE_PORT(_HTTPS)?|PORT(_\d+_TCP(_PROTO|_PORT|_ADDR)?)?)$`)

// podEnvironment is the whole environment of the pod's process, built the way the
// kubelet and a container runtime build it, and nothing from the node's own
// environment but PATH (pods run the host's programs):
//
//   - PATH, HOME (a directory of the pod's own) and HOSTNAME (the pod's host name),
//     which the container's env may override, as it overrides an image's;
//   - the container's env and envFrom, which virtual-kubelet resolved (secretKeyRef,
//     configMapKeyRef, fieldRef, envFrom) together with the Service variables;
//   - resourceFieldRef variables, which virtual-kubelet leaves out: resolved from the
//     pod as API server has it (orig), with the node's allocatable as the default;
//   - the `kubernetes` Service variables pointing at the API server itself: there is no
//     kube-proxy, so the Service's cluster IP leads nowhere.
func podEnvironment(pod, orig *corev1.Pod, home, hostname, apiHost, apiPort string, allocatable corev1.ResourceList, extra map[string]string) []string {
	env := map[string]string{"HOME": home, "HOSTNAME": hostname, "PATH": os.Getenv("PATH")}
	if env["PATH"] == "" {
		env["PATH"] = defaultPath
	}
	c := pod.Spec.Containers[0]
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if orig != nil {
		for _, oc := range orig.Spec.Containers {
			if oc.Name != c.Name {
				continue
			}
			for _, e := range oc.Env {
				if e.ValueFrom == nil || e.ValueFrom.ResourceFieldRef == nil {
					continue
				}
				if _, set := env[e.Name]; set {
					continue
				}
				fs := e.ValueFrom.ResourceFieldRef.DeepCopy()
				if v, err := podresource.ExtractResourceValueByContainerNameAndNodeAllocatable(fs, orig, oc.Name, allocatable); err == nil {
					env[e.Name] = v
				}
			}
		}
	}
	if apiHost != "" {
		for k := range env {
			if kubernetesServiceVar.MatchString(k) {
				delete(env, k)
			}
		}
		url := "tcp://" + apiHost + ":" + apiPort
		tcp := "KUBERNETES_PORT_" + apiPort + "_TCP"
		env["KUBERNETES_SERVICE_HOST"] = apiHost
		env["KUBERNETES_SERVICE_PORT"] = apiPort
		env["KUBERNETES_SERVICE_PORT_HTTPS"] = apiPort
		env["KUBERNETES_PORT"] = url
		env[tcp] = url
		env[tcp+"_PROTO"] = "tcp"
		env[tcp+"_PORT"] = apiPort
		env[tcp+"_ADDR"] = apiHost
	}
	for k, v := range extra {
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// podHostname is the pod's host name as the kubelet sets it: spec.hostname or the pod's
// name, cut to 63 characters.
func podHostname(pod *corev1.Pod) string {
	h := pod.Spec.Hostname
	if h == "" {
		h = pod.Name
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}
