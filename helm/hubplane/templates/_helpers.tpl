{{/* Names, labels and the settings shared by several templates. */}}

{{- define "hubplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name, at most 57 characters so that "-redis" still fits in 63. */}}
{{- define "hubplane.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 57 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 57 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 57 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "hubplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels common to every object of the release. */}}
{{- define "hubplane.commonLabels" -}}
helm.sh/chart: {{ include "hubplane.chart" . }}
app.kubernetes.io/name: {{ include "hubplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The hub server's selector: the component keeps the internal Redis out of it. */}}
{{- define "hubplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hubplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end }}

{{- define "hubplane.labels" -}}
{{ include "hubplane.commonLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{- define "hubplane.redis.fullname" -}}
{{- printf "%s-redis" (include "hubplane.fullname" .) }}
{{- end }}

{{- define "hubplane.redis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hubplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "hubplane.redis.labels" -}}
{{ include "hubplane.commonLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "hubplane.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hubplane.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hubplane.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The chart's own Secret (Redis URL, token secret). */}}
{{- define "hubplane.secretName" -}}
{{- include "hubplane.fullname" . }}
{{- end }}

{{/* The Redis URL the chart stores in its Secret: the internal Redis wins over redis.url. */}}
{{- define "hubplane.redis.chartUrl" -}}
{{- if .Values.redis.internal.enabled }}
{{- printf "redis://%s:6379/0" (include "hubplane.redis.fullname" .) }}
{{- else }}
{{- .Values.redis.url }}
{{- end }}
{{- end }}

{{/* "true" when the pods get REDIS_URL from a Secret (the chart's or an existing one). */}}
{{- define "hubplane.redis.enabled" -}}
{{- if or .Values.redis.existingSecret (include "hubplane.redis.chartUrl" .) }}true{{ end }}
{{- end }}

{{/* "true" when the chart must create its Secret. */}}
{{- define "hubplane.secret.needed" -}}
{{- $redis := and (not .Values.redis.existingSecret) (include "hubplane.redis.chartUrl" .) }}
{{- $token := and (not .Values.tokenSecret.existingSecret) .Values.tokenSecret.value }}
{{- $rest := and (not .Values.restAccessKey.existingSecret) .Values.restAccessKey.value }}
{{- $admin := and (not .Values.admin.token.existingSecret) .Values.admin.token.value }}
{{- if or $redis $token $rest $admin }}true{{ end }}
{{- end }}

{{/* "true" when the pods have the admin listener (admin.port set). */}}
{{- define "hubplane.admin.listener" -}}
{{- if gt (int .Values.admin.port) 0 }}true{{ end }}
{{- end }}

{{/* "true" when the pods get HUBPLANE_ADMIN_TOKEN. */}}
{{- define "hubplane.admin.token" -}}
{{- if or .Values.admin.token.existingSecret .Values.admin.token.value }}true{{ end }}
{{- end }}

{{/* The port /metrics is served on: its container port's name and number. */}}
{{- define "hubplane.metrics.portName" -}}
{{- if include "hubplane.admin.listener" . }}admin{{ else }}http{{ end }}
{{- end }}

{{- define "hubplane.metrics.port" -}}
{{- if include "hubplane.admin.listener" . }}{{ int .Values.admin.port }}{{ else }}{{ int .Values.containerPort }}{{ end }}
{{- end }}

{{/* The admin Service: its own component label, so that only the ServiceMonitor selects it. */}}
{{- define "hubplane.admin.fullname" -}}
{{- printf "%s-admin" (include "hubplane.fullname" .) }}
{{- end }}

{{- define "hubplane.admin.serviceLabels" -}}
app.kubernetes.io/name: {{ include "hubplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: admin
{{- end }}

{{/*
terminationGracePeriodSeconds: the preStop sleep, then the drain, then a margin for the last
writes and the exit. Computed here so that the three stay consistent whatever the values.
*/}}
{{- define "hubplane.terminationGracePeriodSeconds" -}}
{{- add (int .Values.preStopSleep) (int .Values.drainTimeout) (int .Values.terminationGraceMargin) }}
{{- end }}

{{/* Settings that cannot work together fail the render with a message saying what to change. */}}
{{- define "hubplane.validate" -}}
{{- $redis := include "hubplane.redis.enabled" . }}
{{- if not $redis }}
{{- if and (not .Values.autoscaling.enabled) (gt (int .Values.replicaCount) 1) }}
{{- fail "replicaCount > 1 needs the Redis backplane (redis.url, redis.existingSecret or redis.internal.enabled): without it every pod is a separate hub" }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "autoscaling.enabled needs the Redis backplane (redis.url, redis.existingSecret or redis.internal.enabled): without it every pod is a separate hub" }}
{{- end }}
{{- if gt (int .Values.workers) 1 }}
{{- fail "workers > 1 needs the Redis backplane (redis.url, redis.existingSecret or redis.internal.enabled)" }}
{{- end }}
{{- end }}
{{- if eq (.Values.redis.pubsub | default "") "sharded" }}
{{- if .Values.redis.internal.enabled }}
{{- fail "redis.pubsub sharded needs a Redis Cluster: the internal Redis is a single one" }}
{{- end }}
{{- if and (not .Values.redis.existingSecret) .Values.redis.url (not (regexMatch "^rediss?\\+cluster://" .Values.redis.url)) }}
{{- fail "redis.pubsub sharded needs a Redis Cluster URL (redis+cluster:// or rediss+cluster://)" }}
{{- end }}
{{- end }}
{{- if and .Values.redis.internal.enabled .Values.redis.existingSecret }}
{{- fail "redis.internal.enabled and redis.existingSecret exclude each other: the pods would not use the internal Redis" }}
{{- end }}
{{- if and .Values.admin.dashboard (not (include "hubplane.admin.token" .)) }}
{{- fail "admin.dashboard needs admin.token (value or existingSecret): the page calls the admin API with it" }}
{{- end }}
{{- if and (include "hubplane.admin.listener" .) (eq (int .Values.admin.port) (int .Values.containerPort)) }}
{{- fail "admin.port must differ from containerPort (0 keeps /metrics and the admin API on the http port)" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (kindIs "invalid" .Values.podDisruptionBudget.minAvailable) (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable) }}
{{- fail "podDisruptionBudget needs minAvailable or maxUnavailable" }}
{{- end }}
{{- end }}

{{/* HUBPLANE_HUBS: "/hubs/chat=mod:Class,/b=mod:B". */}}
{{- define "hubplane.hubsSpec" -}}
{{- $parts := list }}
{{- range .Values.hubs }}
{{- $parts = append $parts (printf "%s=%s" .path .hub) }}
{{- end }}
{{- join "," $parts }}
{{- end }}
