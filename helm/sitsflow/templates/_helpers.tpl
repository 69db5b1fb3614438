{{/* Names, labels and shared snippets of the sitsflow chart. */}}

{{- define "sitsflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sitsflow.fullname" -}}
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

{{- define "sitsflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sitsflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sitsflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "sitsflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sitsflow
{{- end -}}

{{/* The operator's service account. */}}
{{- define "sitsflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-operator" (include "sitsflow.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches: the listed ones, or the release's own. */}}
{{- define "sitsflow.watchNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- join "," .Values.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* One image for operator, driver, scheduler and workers. */}}
{{- define "sitsflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The operator's settings for the pods of every run (read by pipeline.k8s.config). */}}
{{- define "sitsflow.operatorConfig" -}}
{{- $runs := .Values.runs -}}
{{- $config := dict
  "image" (include "sitsflow.image" .)
  "imagePullPolicy" .Values.image.pullPolicy
  "imagePullSecrets" (list)
  "serviceAccount" $runs.serviceAccount.name
  "credentialsSecret" (default nil $runs.credentialsSecret)
  "allowSpecOverrides" $runs.allowSpecOverrides
  "env" $runs.env
  "driverResources" $runs.driverResources
  "schedulerResources" $runs.schedulerResources
  "nodeSelector" $runs.nodeSelector
  "tolerations" $runs.tolerations
  "driverBackoffLimit" $runs.driverBackoffLimit
  "driverExtraArgs" $runs.driverExtraArgs
  "activeDeadlineSeconds" (default nil $runs.activeDeadlineSeconds)
  "deleteClusterWhenDone" $runs.deleteClusterWhenDone
  "reportStatus" $runs.reportStatus
  "dashboardUrl" (default nil $runs.dashboardUrl)
  "tls" $runs.tls
  "networkPolicy" $runs.networkPolicy
  "pollSeconds" $runs.pollSeconds
-}}
{{- range .Values.imagePullSecrets -}}
{{- $_ := set $config "imagePullSecrets" (append $config.imagePullSecrets .name) -}}
{{- end -}}
{{- toPrettyJson $config -}}
{{- end -}}
