{{/* Names are cut at 63 characters: the limit of a label value and of most names. */}}
{{- define "kubemr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's prefix: "kubemr" for a release named kubemr, else "<release>-kubemr". */}}
{{- define "kubemr.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "kubemr.controllerName" -}}
{{- printf "%s-controller" (include "kubemr.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubemr.controllerServiceAccount" -}}
{{- default (include "kubemr.controllerName" .) .Values.serviceAccount.controller.name -}}
{{- end -}}

{{- define "kubemr.workerServiceAccount" -}}
{{- default (printf "%s-worker" (include "kubemr.fullname" .) | trunc 63 | trimSuffix "-") .Values.serviceAccount.worker.name -}}
{{- end -}}

{{- define "kubemr.jobDefaultsName" -}}
{{- printf "%s-job-defaults" (include "kubemr.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kubemr.labels" -}}
app.kubernetes.io/name: {{ include "kubemr.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* What the Deployment selects by: fixed for the release's life (a selector cannot change). */}}
{{- define "kubemr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubemr.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "kubemr.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if hasPrefix "sha256:" $tag -}}
{{- printf "%s@%s" .Values.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The job defaults file the controller reads (--job-defaults): the storage defaults, and the
worker defaults with the controller's own image unless jobDefaults.template.image names
another. Only fields that are set appear, so each leaves the resource's own value alone.
*/}}
{{- define "kubemr.jobDefaults" -}}
{{- $storage := dict -}}
{{- with .Values.storage.endpoint }}{{ $_ := set $storage "endpoint" . }}{{ end -}}
{{- with .Values.storage.region }}{{ $_ := set $storage "region" . }}{{ end -}}
{{- with .Values.storage.secretName }}{{ $_ := set $storage "secretRef" (dict "name" .) }}{{ end -}}
{{- $t := .Values.jobDefaults.template -}}
{{- $template := dict "image" (default (include "kubemr.image" .) $t.image) -}}
{{- with $t.imagePullPolicy }}{{ $_ := set $template "imagePullPolicy" . }}{{ end -}}
{{- if $t.serviceAccountName -}}
{{- $_ := set $template "serviceAccountName" $t.serviceAccountName -}}
{{- else if and .Values.watchNamespaces .Values.serviceAccount.worker.create -}}
{{- $_ := set $template "serviceAccountName" (include "kubemr.workerServiceAccount" .) -}}
{{- end -}}
{{- with $t.resources }}{{ $_ := set $template "resources" . }}{{ end -}}
{{- with $t.nodeSelector }}{{ $_ := set $template "nodeSelector" . }}{{ end -}}
{{- with $t.tolerations }}{{ $_ := set $template "tolerations" . }}{{ end -}}
{{- $defaults := dict "template" $template -}}
{{- if $storage }}{{ $_ := set $defaults "storage" $storage }}{{ end -}}
{{- toYaml $defaults -}}
{{- end -}}
