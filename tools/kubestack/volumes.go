package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	podresource "k8s.io/kubernetes/pkg/api/v1/resource"
	"k8s.io/kubernetes/pkg/fieldpath"
)

// volume is a pod volume made ready on the host.
type volume struct {
	// hostPath is the directory (or file, for a hostPath volume) bound into the pod;
	// empty for a tmpfs.
	hostPath  string
	tmpfsSize int64
}

// volumeWriter fills a pod's volumes from the API: secrets, config maps, the downward
// API and service-account tokens, as the kubelet's volume plugins do.
type volumeWriter struct {
	client      kubernetes.Interface
	pod         *corev1.Pod
	allocatable corev1.ResourceList
	// tmpfs: memory-backed emptyDirs can be real tmpfs mounts (in a mount namespace).
	tmpfs bool
	// refreshers keep the tokens written fresh; they are started once the pod starts.
	refreshers []func(context.Context)
}

// prepare makes every volume of the pod under dir/volumes.
func (w *volumeWriter) prepare(ctx context.Context, dir string) (map[string]volume, error) {
	out := map[string]volume{}
	for _, v := range w.pod.Spec.Volumes {
		path := filepath.Join(dir, "volumes", v.Name)
		var err error
		switch {
		case v.EmptyDir != nil:
			if v.EmptyDir.Medium == corev1.StorageMediumMemory && w.tmpfs {
				size := int64(0)
				if v.EmptyDir.SizeLimit != nil {
					size = v.EmptyDir.SizeLimit.Value()
				}
				out[v.Name] = volume{tmpfsSize: size}
				continue
			}
			// World-writable, as the kubelet makes emptyDirs.
			if err = os.MkdirAll(path, 0o777); err == nil {
				err = os.Chmod(path, 0o777)
			}
		case v.HostPath != nil:
			path, err = hostPathVolume(v.HostPath)
		case v.Secret != nil:
			err = w.writeFiles(path, func(files map[string]file) error {
				return w.secretFiles(ctx, files, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, mode(v.Secret.DefaultMode))
			})
		case v.ConfigMap != nil:
			err = w.writeFiles(path, func(files map[string]file) error {
				return w.configMapFiles(ctx, files, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional, mode(v.ConfigMap.DefaultMode))
			})
		case v.DownwardAPI != nil:
			err = w.writeFiles(path, func(files map[string]file) error {
				return w.downwardFiles(files, v.DownwardAPI.Items, mode(v.DownwardAPI.DefaultMode))
			})
		case v.Projected != nil:
			err = w.writeProjected(ctx, path, v.Projected)
		default:
			return nil, fmt.Errorf("volume %q: its type is not supported by kubestack nodes (emptyDir, hostPath, secret, configMap, downwardAPI and projected are)", v.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("volume %q: %w", v.Name, err)
		}
		out[v.Name] = volume{hostPath: path}
	}
	return out, nil
}

func mode(m *int32) os.FileMode {
	if m == nil {
		return 0o644
	}
	return os.FileMode(*m)
}

type file struct {
	data []byte
	mode os.FileMode
}

// writeFiles writes the files fill produces into dir, replacing what was there.
func (w *volumeWriter) writeFiles(dir string, fill func(map[string]file) error) error {
	files := map[string]file{}
	if err := fill(files); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return writeAll(dir, files)
}

func writeAll(dir string, files map[string]file) error {
	for rel, f := range files {
		if err := writeAtomic(filepath.Join(dir, rel), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// writeAtomic replaces path by a file with data: a process reading it sees the old or
// the new content, never a part.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), mode)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

func hostPathVolume(hp *corev1.HostPathVolumeSource) (string, error) {
	t := corev1.HostPathUnset
	if hp.Type != nil {
		t = *hp.Type
	}
	switch t {
	case corev1.HostPathDirectoryOrCreate:
		return hp.Path, os.MkdirAll(hp.Path, 0o755)
	case corev1.HostPathFileOrCreate:
		f, err := os.OpenFile(hp.Path, os.O_CREATE|os.O_RDONLY, 0o644)
		if err == nil {
			f.Close()
		}
		return hp.Path, err
	}
	_, err := os.Stat(hp.Path)
	return hp.Path, err
}

// keyed adds data to files: every key, or the items asked for.
func keyed(files map[string]file, data map[string][]byte, items []corev1.KeyToPath, defaultMode os.FileMode, what string) error {
	if len(items) == 0 {
		for k, v := range data {
			files[k] = file{data: v, mode: defaultMode}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			return fmt.Errorf("%s has no key %q", what, it.Key)
		}
		m := defaultMode
		if it.Mode != nil {
			m = os.FileMode(*it.Mode)
		}
		files[it.Path] = file{data: v, mode: m}
	}
	return nil
}

func (w *volumeWriter) secretFiles(ctx context.Context, files map[string]file, name string, items []corev1.KeyToPath, optional *bool, m os.FileMode) error {
	s, err := w.client.CoreV1().Secrets(w.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil
	}
	if err != nil {
		return fmt.Errorf("secret %q: %w", name, err)
	}
	return keyed(files, s.Data, items, m, fmt.Sprintf("secret %q", name))
}

func (w *volumeWriter) configMapFiles(ctx context.Context, files map[string]file, name string, items []corev1.KeyToPath, optional *bool, m os.FileMode) error {
	c, err := w.client.CoreV1().ConfigMaps(w.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && optional != nil && *optional {
		return nil
	}
	if err != nil {
		return fmt.Errorf("config map %q: %w", name, err)
	}
	data := map[string][]byte{}
	for k, v := range c.Data {
		data[k] = []byte(v)
	}
	for k, v := range c.BinaryData {
		data[k] = v
	}
	return keyed(files, data, items, m, fmt.Sprintf("config map %q", name))
}

func (w *volumeWriter) downwardFiles(files map[string]file, items []corev1.DownwardAPIVolumeFile, defaultMode os.FileMode) error {
	for _, it := range items {
		var value string
		var err error
		switch {
		case it.FieldRef != nil:
			value, err = podField(w.pod, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			value, err = podresource.ExtractResourceValueByContainerNameAndNodeAllocatable(
				it.ResourceFieldRef, w.pod, it.ResourceFieldRef.ContainerName, w.allocatable)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", it.Path, err)
		}
		m := defaultMode
		if it.Mode != nil {
			m = os.FileMode(*it.Mode)
		}
		files[it.Path] = file{data: []byte(value), mode: m}
	}
	return nil
}

// podField is a downward-API field of the pod, as the kubelet resolves it.
func podField(pod *corev1.Pod, path string) (string, error) {
	switch path {
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.podIP":
		return "127.0.0.1", nil
	case "status.hostIPs", "status.podIPs":
		return "127.0.0.1", nil
	}
	return fieldpath.ExtractFieldPathAsString(pod, path)
}

// writeProjected fills a projected volume, such as the kube-api-access-* volume the
// ServiceAccount admission plugin adds: token, ca.crt and namespace.
func (w *volumeWriter) writeProjected(ctx context.Context, dir string, p *corev1.ProjectedVolumeSource) error {
	var tokens []corev1.ServiceAccountTokenProjection
	err := w.writeFiles(dir, func(files map[string]file) error {
		m := mode(p.DefaultMode)
		for _, src := range p.Sources {
			var err error
			switch {
			case src.Secret != nil:
				err = w.secretFiles(ctx, files, src.Secret.Name, src.Secret.Items, src.Secret.Optional, m)
			case src.ConfigMap != nil:
				err = w.configMapFiles(ctx, files, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, m)
			case src.DownwardAPI != nil:
				err = w.downwardFiles(files, src.DownwardAPI.Items, m)
			case src.ServiceAccountToken != nil:
				var token []byte
				token, _, err = w.requestToken(ctx, src.ServiceAccountToken)
				files[src.ServiceAccountToken.Path] = file{data: token, mode: m}
				tokens = append(tokens, *src.ServiceAccountToken)
			default:
				err = fmt.Errorf("a projected source kubestack nodes do not support (secret, configMap, downwardAPI and serviceAccountToken are)")
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, t := range tokens {
		w.refreshers = append(w.refreshers, func(ctx context.Context) {
			w.refreshToken(ctx, filepath.Join(dir, t.Path), t, mode(p.DefaultMode))
		})
	}
	return nil
}

// requestToken asks the TokenRequest API for a token of the pod's service account,
// bound to the pod: it stops working when the pod is deleted.
func (w *volumeWriter) requestToken(ctx context.Context, proj *corev1.ServiceAccountTokenProjection) ([]byte, time.Time, error) {
	sa := w.pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: proj.ExpirationSeconds,
		BoundObjectRef: &authenticationv1.BoundObjectReference{
			Kind: "Pod", APIVersion: "v1", Name: w.pod.Name, UID: w.pod.UID,
		},
	}}
	if proj.Audience != "" {
		req.Spec.Audiences = []string{proj.Audience}
	}
	tr, err := w.client.CoreV1().ServiceAccounts(w.pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("token for service account %q: %w", sa, err)
	}
	return []byte(tr.Status.Token), tr.Status.ExpirationTimestamp.Time, nil
}

// refreshToken replaces the token when 80% of its lifetime has passed, or after a day,
// as the kubelet's token manager does.
func (w *volumeWriter) refreshToken(ctx context.Context, path string, proj corev1.ServiceAccountTokenProjection, m os.FileMode) {
	issued := time.Now()
	ttl := time.Hour
	if proj.ExpirationSeconds != nil {
		ttl = time.Duration(*proj.ExpirationSeconds) * time.Second
	}
	for {
		wait := time.Until(issued.Add(ttl * 8 / 10))
		if wait > 24*time.Hour {
			wait = 24 * time.Hour
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		token, exp, err := w.requestToken(ctx, &proj)
		if err != nil {
			if ctx.Err() == nil {
				klog.Warningf("refreshing the token of pod %s/%s: %v", w.pod.Namespace, w.pod.Name, err)
			}
			issued = time.Now().Add(-ttl * 7 / 10) // retry in a tenth of the lifetime
			continue
		}
		if ctx.Err() != nil {
			return // the pod is going, and its directory with it
		}
		if err := writeAtomic(path, token, m); err != nil {
			klog.Warningf("writing the token of pod %s/%s: %v", w.pod.Namespace, w.pod.Name, err)
		}
		issued = time.Now()
		if d := time.Until(exp); d > 0 {
			ttl = d
		}
	}
}

// sortedMounts lists the container's mounts parents first, so that a mount inside
// another lands on top of it.
func sortedMounts(mounts []initMount) {
	sort.SliceStable(mounts, func(i, j int) bool {
		return strings.Count(filepath.Clean(mounts[i].Target), "/") < strings.Count(filepath.Clean(mounts[j].Target), "/")
	})
}
