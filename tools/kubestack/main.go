// Command kubestack runs the parts of a small, real Kubernetes control plane for tests:
// etcd, the API server, the controller manager and the scheduler from the upstream
// sources, and a node whose pods are local processes. Each part runs as its own
// process: the upstream commands register global flags and metrics, and two of them
// in one process panic.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

const usage = `usage: kubestack <command> [flags]

commands:
  pki                 write the CA, admin client and service-account keys to --dir
  etcd                an embedded etcd on 127.0.0.1
  apiserver           kube-apiserver (upstream flags)
  controller-manager  kube-controller-manager (upstream flags)
  scheduler           kube-scheduler (upstream flags)
  node                a node that runs each pod's first container as a local process
  pod-init            (run by the node) sets up a pod's namespaces and runs its command
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "pki":
		err = runPKI(args)
	case "etcd":
		err = runEtcd(args)
	case "apiserver":
		err = runCobra(apiserver.NewAPIServerCommand(), args)
	case "controller-manager":
		err = runCobra(controllermanager.NewControllerManagerCommand(), args)
	case "scheduler":
		err = runCobra(scheduler.NewSchedulerCommand(), args)
	case "node":
		err = runNode(args)
	case "pod-init":
		err = runPodInit(args)
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kubestack %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func runCobra(cmd *cobra.Command, args []string) error {
	cmd.SetArgs(args)
	return cmd.Execute()
}
