package main

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/klog/v2"
)

// configErrorAge is how long a pod of this node may wait, unknown to the provider,
// before its environment is checked: virtual-kubelet hands a pod over within a second.
const configErrorAge = 2 * time.Second

// watchConfigErrors reports, as a kubelet does, a pod whose container environment names
// a Secret, a ConfigMap or a key that does not exist. virtual-kubelet resolves the
// environment before it hands a pod to the provider and, when that fails, only retries:
// the pod would stay Pending with no reason at all. Here it gets the kubelet's waiting
// state, CreateContainerConfigError with the kubelet's message, and still starts once
// what it names appears (virtual-kubelet's retries and resyncs hand it over then).
func (p *processProvider) watchConfigErrors(ctx context.Context, every time.Duration) {
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	selector := fields.OneTermEqualSelector("spec.nodeName", p.nodeName).String()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		// ResourceVersion "0": served from the API server's cache, cheap on every tick.
		pods, err := p.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{
			FieldSelector: selector, ResourceVersion: "0",
		})
		if err != nil {
			continue
		}
		for i := range pods.Items {
			pod := &pods.Items[i]
			if !p.awaitingHandOver(pod) {
				continue
			}
			message := p.missingEnvSource(ctx, pod)
			if message == "" || waitingMessage(pod) == message {
				continue
			}
			p.reportConfigError(ctx, pod, message)
		}
	}
}

// awaitingHandOver: a pending pod of this node, old enough, that the provider never got.
func (p *processProvider) awaitingHandOver(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodPending || pod.DeletionTimestamp != nil {
		return false
	}
	if len(pod.Spec.Containers) == 0 || time.Since(pod.CreationTimestamp.Time) < configErrorAge {
		return false
	}
	p.mu.Lock()
	_, known := p.pods[podKey(pod.Namespace, pod.Name)]
	p.mu.Unlock()
	return !known
}

func waitingMessage(pod *corev1.Pod) string {
	for _, s := range pod.Status.ContainerStatuses {
		if s.State.Waiting != nil && s.State.Waiting.Reason == "CreateContainerConfigError" {
			return s.State.Waiting.Message
		}
	}
	return ""
}

// missingEnvSource is the kubelet's message for the first required Secret, ConfigMap or
// key the first container's environment names and the API server does not have, or "".
func (p *processProvider) missingEnvSource(ctx context.Context, pod *corev1.Pod) string {
	c := pod.Spec.Containers[0]
	secrets := map[string]*corev1.Secret{}
	configMaps := map[string]*corev1.ConfigMap{}
	secret := func(name string) (*corev1.Secret, string) {
		if s, ok := secrets[name]; ok {
			return s, ""
		}
		s, err := p.client.CoreV1().Secrets(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, fmt.Sprintf("secret %q not found", name)
		}
		if err != nil {
			return nil, "" // not known to be missing: say nothing
		}
		secrets[name] = s
		return s, ""
	}
	configMap := func(name string) (*corev1.ConfigMap, string) {
		if m, ok := configMaps[name]; ok {
			return m, ""
		}
		m, err := p.client.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, fmt.Sprintf("configmap %q not found", name)
		}
		if err != nil {
			return nil, ""
		}
		configMaps[name] = m
		return m, ""
	}
	optional := func(o *bool) bool { return o != nil && *o }
	for _, from := range c.EnvFrom {
		if ref := from.SecretRef; ref != nil && !optional(ref.Optional) {
			if _, msg := secret(ref.Name); msg != "" {
				return msg
			}
		}
		if ref := from.ConfigMapRef; ref != nil && !optional(ref.Optional) {
			if _, msg := configMap(ref.Name); msg != "" {
				return msg
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			continue
		}
		if ref := e.ValueFrom.SecretKeyRef; ref != nil && !optional(ref.Optional) {
			s, msg := secret(ref.Name)
			if msg != "" {
				return msg
			}
			if s != nil {
				if _, ok := s.Data[ref.Key]; !ok {
					return fmt.Sprintf("couldn't find key %s in Secret %s/%s", ref.Key, pod.Namespace, ref.Name)
				}
			}
		}
		if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil && !optional(ref.Optional) {
			m, msg := configMap(ref.Name)
			if msg != "" {
				return msg
			}
			if m != nil {
				_, inData := m.Data[ref.Key]
				_, inBinary := m.BinaryData[ref.Key]
				if !inData && !inBinary {
					return fmt.Sprintf("couldn't find key %s in ConfigMap %s/%s", ref.Key, pod.Namespace, ref.Name)
				}
			}
		}
	}
	return ""
}

func (p *processProvider) reportConfigError(ctx context.Context, pod *corev1.Pod, message string) {
	pod = pod.DeepCopy()
	c := pod.Spec.Containers[0]
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: c.Name, Image: c.Image, Started: boolPtr(false),
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
			Reason: "CreateContainerConfigError", Message: message,
		}},
	}}
	if _, err := p.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		klog.V(2).Infof("pod %s/%s: reporting %q: %v", pod.Namespace, pod.Name, message, err)
		return
	}
	klog.Warningf("pod %s/%s: CreateContainerConfigError: %s", pod.Namespace, pod.Name, message)
}
