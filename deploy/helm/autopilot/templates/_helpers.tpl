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
stop here, saying what to set, rather than roll out pods that cannot pull or cannot run. The same
goes for no repository at all (values.yaml names none: none is published) and for placeholders:
a `<registry>` copied from the docs, or ghcr.io/autopilot/autopilot, the unpublished name that
values.yaml once held.
*/}}
{{- define "autopilot.image" -}}
{{- $repository := .Values.image.repository | default "" | trim -}}
{{- if not $repository -}}
{{- fail "image.repository is not set. No image of this project is published: build it (docker build -f deploy/Dockerfile -t <registry>/autopilot:<tag> .), push it to a registry the nodes can pull from, and install with --set image.repository=<registry>/autopilot --set image.tag=<tag>: see docs/deploy.md#the-image" -}}
{{- end -}}
{{- if or (regexMatch "[<>]" $repository) (regexMatch "^ghcr\\.io/autopilot/autopilot([:@].*)?$" $repository) -}}
{{- fail (printf "image.repository %s is a placeholder, not an image anyone publishes. Build this project's image (docker build -f deploy/Dockerfile -t <registry>/autopilot:<tag> .), push it, and set image.repository and image.tag to it: see docs/deploy.md#the-image" $repository) -}}
{{- end -}}
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

{{/*
Seconds of a schedule value (repeat, invasive) as the exporter reads it: a Go duration ("1h", "90m",
"1h30m"; fractions round up) or whole hours as IBM's chart gave them (1 is 1h); "0" when disabled,
empty for a cron expression, whose period a template cannot work out.
*/}}
{{- define "autopilot.scheduleSeconds" -}}
{{- $text := toString . | trim | trimPrefix "+" -}}
{{- if regexMatch "^[0-9]+$" $text -}}
{{- mul (atoi $text) 3600 -}}
{{- else if regexMatch "^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$" $text -}}
{{- $units := dict "ns" 1e-9 "us" 1e-6 "µs" 1e-6 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h)" $text -1 -}}
{{- $unit := regexFind "(ns|us|µs|ms|s|m|h)$" . -}}
{{- $total = addf $total (mulf (float64 (trimSuffix $unit .)) (get $units $unit)) -}}
{{- end -}}
{{- int (ceil $total) -}}
{{- end -}}
{{- end -}}

{{/*
The thresholds of rules/autopilot.rules.yaml that the DaemonSet's flags also set from values, as
pairs of the exact string in the rules and what it becomes. The rules file is not a template (its
alerts hold {{ "{{ $labels }}" }}), so the PrometheusRule replaces these strings; test/deploy/
rules-values.test.ts fails when one no longer occurs in the rules. At the default values every pair
is the identity. The round is repeat in seconds: a cron repeat counts as a day and a disabled one
(0) as the 1h default, since the chart cannot know a cron's period (the exporter's
autopilot_check_interval_seconds does, and the staleness alert uses it first).
*/}}
{{- define "autopilot.rulesValues" -}}
{{- $seconds := include "autopilot.scheduleSeconds" .Values.repeat -}}
{{- $round := 3600 -}}
{{- if eq $seconds "" -}}
{{- $round = 86400 -}}
{{- else if ne $seconds "0" -}}
{{- $round = atoi $seconds -}}
{{- end -}}
{{- $bw := toString .Values.PCIeBW -}}
{{- $pairs := list
  (list "autopilot_health_checks{health=\"pciebw\"} < 4" (printf "autopilot_health_checks{health=\"pciebw\"} < %s" $bw))
  (list "in the last pciebw run, under 4 GB/s." (printf "in the last pciebw run, under %s GB/s." $bw))
  (list "autopilot_check_last_run_timestamp_seconds > 3 * 3600" (printf "autopilot_check_last_run_timestamp_seconds > 3 * %d" $round))
  (list "[10800s]" (printf "[%ds]" (mul 3 $round)))
  (list "offset 10800s" (printf "offset %ds" (mul 3 $round)))
  (list "for: 7200s" (printf "for: %ds" (mul 2 $round)))
-}}
{{- /* Fleet baselines (issue 20), in whole percents as the alerts' texts say them. */ -}}
{{- $slower := int .Values.fleet.slowerPercent -}}
{{- $drop := int .Values.fleet.dropPercent -}}
{{- $pairs = concat $pairs (list
  (list "gpu:autopilot_gpu_figure:fleet_ratio < 0.9" (printf "gpu:autopilot_gpu_figure:fleet_ratio < %g" (divf (sub 100 $slower) 100)))
  (list "(gpumodel:autopilot_gpu_figure:count >= 8)" (printf "(gpumodel:autopilot_gpu_figure:count >= %d)" (int .Values.fleet.minGpus)))
  (list "more than 10 % below" (printf "more than %d %% below" $slower))
  (list "< 0.85 * quantile_over_time" (printf "< %g * quantile_over_time" (divf (sub 100 $drop) 100)))
  (list "more than 15 % below its own median" (printf "more than %d %% below its own median" $drop))
  (list "under 85 % of its own median" (printf "under %d %% of its own median" (sub 100 $drop)))
) -}}
{{- $periodic := "" -}}
{{- range .Values.env -}}
{{- if and (eq (toString .name) "PERIODIC_CHECKS") (regexMatch "^[a-z0-9, ]+$" (toString .value)) -}}
{{- $periodic = splitList "," (toString .value) | compact | join "|" | nospace -}}
{{- end -}}
{{- end -}}
{{- if and $periodic (not (has "all" (splitList "|" $periodic))) -}}
{{- /* The exporter adds gpucount to every round whatever PERIODIC_CHECKS lists (checks/gpucount.ts). */ -}}
{{- if not (has "gpucount" (splitList "|" $periodic)) -}}
{{- $periodic = printf "%s|gpucount" $periodic -}}
{{- end -}}
{{- $pairs = append $pairs (list "check=~\"pciebw|remapped|dcgm|ping|gpupower|nvlink|gpucount\"" (printf "check=~\"%s\"" $periodic)) -}}
{{- end -}}
{{- /* The exporter alerts' job selector: autopilot.* covers IBM's job and this chart's default; a
  release whose scraped job does not start with autopilot (serviceMonitor.job, else the metrics
  Service's name) gets its own, or AutopilotExporterAbsent would fire for good. Without the
  chart's ServiceMonitor the job is the operator's own scrape config's: left as written. */ -}}
{{- $job := default (printf "%s-metrics-service" (include "autopilot.fullname" .)) .Values.serviceMonitor.job -}}
{{- if and .Values.serviceMonitor.enabled (not (hasPrefix "autopilot" $job)) -}}
{{- $pairs = concat $pairs (list
  (list "up{job=~\"autopilot.*\"}" (printf "up{job=%s}" (quote $job)))
  (list "a job matching \"autopilot.*\"" (printf "the job %s" (quote $job)))
) -}}
{{- end -}}
{{- toJson $pairs -}}
{{- end -}}
