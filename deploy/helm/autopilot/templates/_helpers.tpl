{{/*
Names. With the release named autopilot (Autopilot's own instructions), every object keeps the name
IBM's chart gave it, so `helm upgrade` replaces Autopilot in place: DaemonSet autopilot, Services
autopilot-healthchecks, autopilot-metrics-service, autopilot-readinessprobe.
*/}}
{{- define "autopilot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "autopilot.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Service whose EndpointSlices list the exporters (AUTOPILOT_SERVICE). */}}
{{- define "autopilot.healthchecksService" -}}
{{- printf "%s-healthchecks" (include "autopilot.fullname" .) -}}
{{- end -}}

{{- define "autopilot.serviceAccountName" -}}
{{- if .Values.rbac.create -}}
{{- include "autopilot.fullname" . -}}
{{- else -}}
{{- default (include "autopilot.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The deep check's PriorityClass: the one the chart creates, or a named one, or none. */}}
{{- define "autopilot.deepCheckPriorityClass" -}}
{{- if .Values.deepCheck.priorityClass.name -}}
{{- .Values.deepCheck.priorityClass.name -}}
{{- else if .Values.deepCheck.priorityClass.create -}}
{{- printf "%s-deepcheck" (include "autopilot.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
IBM's image is another program (Python scripts around a Go binary): with this chart's arguments it
would not start, and no tag of it is this project's. An upgrade that keeps IBM's values file must
stop here, saying what to set, rather than roll out pods that cannot pull or cannot run.
*/}}
{{- define "autopilot.image" -}}
{{- if regexMatch "^quay\\.io/autopilot/autopilot([:@].*)?$" .Values.image.repository -}}
{{- fail (printf "image.repository %s is IBM Autopilot's image, which this chart cannot run. Build this project's image (docker build -f deploy/Dockerfile -t <registry>/autopilot:<tag> .), push it, and set image.repository and image.tag to it: see docs/deploy.md#the-image and docs/upgrading.md" .Values.image.repository) -}}
{{- end -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if hasPrefix "sha256:" $tag -}}
{{- printf "%s@%s" .Values.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/*
The pod selector. `app: <fullname>` is IBM's selector for the release named autopilot; a
DaemonSet's selector cannot change, so keeping it is what lets an upgrade happen in place.
*/}}
{{- define "autopilot.selectorLabels" -}}
app: {{ include "autopilot.fullname" . }}
{{- end -}}

{{- define "autopilot.labels" -}}
{{ include "autopilot.selectorLabels" . }}
app.kubernetes.io/name: {{ include "autopilot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: autopilot
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/*
Whether to render prometheus-operator's kinds: the cluster serves them, or monitoring.forceCRDs says
so. `helm template` and GitOps tools render without cluster access (no --api-versions), where the
check alone would silently drop the ServiceMonitor and PrometheusRule.
*/}}
{{- define "autopilot.hasMonitoringApi" -}}
{{- if or (dig "forceCRDs" false (default dict .Values.monitoring)) (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") -}}true{{- end -}}
{{- end -}}

{{/*
The address rules/autopilot.rules.yaml's runbook_url links start with (test/unit/rules.test.ts
holds it too): the prefix the PrometheusRule swaps for docsUrl.
*/}}
{{- define "autopilot.rulesDocsUrl" -}}
https://github.com/autopilot/autopilot/blob/main/
{{- end -}}
