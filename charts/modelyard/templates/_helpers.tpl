{{/* The chart's name, cut to 63 characters (a label value). */}}
{{- define "modelyard.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name, cut to 63 characters (a DNS label). */}}
{{- define "modelyard.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelyard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "modelyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "modelyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "modelyard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelyard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the operator watches, when it does not watch them all. */}}
{{- define "modelyard.namespaces" -}}
{{- if .Values.watch.namespaces -}}
{{- toJson .Values.watch.namespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- define "modelyard.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{/*
The operator's permissions: exactly the calls it makes (operator/kube.py and kopf's
watches). No wildcard. tests/chart checks this list against the operator's code.
*/}}
{{- define "modelyard.rules" -}}
- apiGroups: [modelyard.dev]
  resources: [models]
  verbs: [get, list, watch]
- apiGroups: [modelyard.dev]
  resources: [models/status, models/scale]
  verbs: [patch]
- apiGroups: [modelyard.dev]
  resources: [finetunes]
  verbs: [get, list, watch]
- apiGroups: [modelyard.dev]
  resources: [finetunes/status]
  verbs: [patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, create]
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
- apiGroups: [inference.networking.k8s.io]
  resources: [inferencepools]
  verbs: [get, create, patch, delete]
{{- end -}}


{{/* The router's objects: its own name, labels and ServiceAccount. */}}
{{- define "modelyard.routerName" -}}
{{- printf "%s-router" (include "modelyard.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelyard.routerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "modelyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: router
{{- end -}}

{{- define "modelyard.routerLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "modelyard.routerSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "modelyard.routerServiceAccountName" -}}
{{- if .Values.router.serviceAccount.create -}}
{{- default (include "modelyard.routerName" .) .Values.router.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.router.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The router's permissions, exactly its calls (server/router/kube.py): it lists and watches
the Models and their pods, and wakes a Model at zero replicas through its scale
subresource. Nothing else.
*/}}
{{- define "modelyard.routerRules" -}}
- apiGroups: [modelyard.dev]
  resources: [models, finetunes]
  verbs: [list, watch]
- apiGroups: [modelyard.dev]
  resources: [models/scale]
  verbs: [patch]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
{{- end -}}

{{/* Egress to the cluster DNS only (UDP and TCP 53). */}}
{{- define "modelyard.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.dnsNamespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dnsPodLabels | nindent 10 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}


{{/*
The InferencePool of a Model, as the operator names it (operator/names.py base_name): the name
lower-cased, other characters than [a-z0-9-] made dashes, an "m-" before a leading non-letter.
A name longer than 63 characters gets a hash there, which a template cannot redo: it fails.
*/}}
{{- define "modelyard.poolName" -}}
{{- $name := regexReplaceAll "[^a-z0-9-]+" (lower .) "-" | trimAll "-" -}}
{{- if not (regexMatch "^[a-z]" $name) -}}{{- $name = printf "m-%s" $name -}}{{- end -}}
{{- if gt (len $name) 63 -}}
{{- fail (printf "gatewayInference.models: %q makes a pool name longer than 63 characters; the chart cannot deploy its picker (deploy GAIE's own chart for it)" .) -}}
{{- end -}}
{{- $name -}}
{{- end -}}

{{/* The endpoint picker's Service and Deployment for a pool: the name GAIE's inferencepool
chart gives it and the operator's pools name by default (operator/names.py). */}}
{{- define "modelyard.pickerName" -}}
{{- printf "%s-epp" (trunc 40 .) -}}
{{- end -}}

{{- define "modelyard.pickerAccount" -}}
{{- printf "%s-epp" (include "modelyard.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* gatewayInference.models, each with its namespace filled in (the first watched one). */}}
{{- define "modelyard.gatewayModels" -}}
{{- $default := first (include "modelyard.namespaces" . | fromJsonArray) -}}
{{- $models := list -}}
{{- range .Values.gatewayInference.models -}}
{{- $models = append $models (dict "name" .name "namespace" (default $default .namespace) "pool" (include "modelyard.poolName" .name)) -}}
{{- end -}}
{{- toJson $models -}}
{{- end -}}

{{- define "modelyard.pickerSelectorLabels" -}}
app.kubernetes.io/name: {{ include "modelyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: endpoint-picker
{{- end -}}

{{- define "modelyard.pickerLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "modelyard.pickerSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
