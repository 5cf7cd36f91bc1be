{{/* Names and labels. */}}
{{- define "storepulse.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "storepulse.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "storepulse.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "storepulse.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>"; call with (dict "root" $ "name" "ingest"). */}}
{{- define "storepulse.componentName" -}}
{{- printf "%s-%s" (include "storepulse.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "storepulse.selectorLabels" -}}
app.kubernetes.io/name: {{ include "storepulse.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "storepulse.labels" -}}
{{ include "storepulse.selectorLabels" . }}
app.kubernetes.io/part-of: storepulse
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- if not .root.Values.plainManifests }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end }}
{{- end -}}

{{- define "storepulse.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "storepulse.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "storepulse.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
TOML rendering of a values map (Helm's toToml writes whole numbers from JSON/YAML as
floats, which the services' integer keys refuse). Scalars first, then sub-tables.
Call with (dict "prefix" "" "table" $map).
*/}}
{{- define "storepulse.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}{{ toJson $v }}
{{- else if kindIs "bool" $v -}}{{ $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) -}}
{{- if eq (float64 (int64 $v)) (float64 $v) -}}{{ int64 $v }}{{- else -}}{{ $v }}{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) -}}{{ $v }}
{{- else if kindIs "slice" $v -}}[{{- range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "storepulse.tomlValue" $e }}{{ end -}}]
{{- else if kindIs "invalid" $v -}}""
{{- else -}}{{ fail (printf "storepulse: cannot write %v (%s) to TOML" $v (kindOf $v)) }}
{{- end -}}
{{- end -}}

{{- define "storepulse.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "storepulse.tomlTable" -}}
{{- $prefix := .prefix -}}
{{- $table := .table -}}
{{- range $k := keys $table | sortAlpha }}
{{- $v := index $table $k }}
{{- if not (kindIs "map" $v) }}
{{ include "storepulse.tomlKey" $k }} = {{ include "storepulse.tomlValue" $v }}
{{- end }}
{{- end }}
{{- range $k := keys $table | sortAlpha }}
{{- $v := index $table $k }}
{{- if kindIs "map" $v }}
{{- $name := printf "%s%s" $prefix (include "storepulse.tomlKey" $k) }}

[{{ $name }}]
{{- include "storepulse.tomlTable" (dict "prefix" (printf "%s." $name) "table" $v) }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The configuration file of one service: the shared sections (.Values.config), Kafka
security properties, the service's own section (its config values plus the listen
address from its port and the paths of mounted files). Call with (dict "root" $
"name" "ingest" "svc" $svc).
*/}}
{{- define "storepulse.serviceConfig" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{- $cfg := deepCopy (default dict $root.Values.config) -}}
{{- $kafka := default dict (get $cfg "kafka") -}}
{{- $props := default dict (get $kafka "properties") -}}
{{- $tls := $root.Values.kafka.tls -}}
{{- $sasl := $root.Values.kafka.sasl -}}
{{- if and $tls.enabled $sasl.enabled }}{{ $_ := set $props "security.protocol" "SASL_SSL" }}
{{- else if $tls.enabled }}{{ $_ := set $props "security.protocol" "SSL" }}
{{- else if $sasl.enabled }}{{ $_ := set $props "security.protocol" "SASL_PLAINTEXT" }}{{ end -}}
{{- if $tls.enabled }}
{{- if $tls.existingSecret }}{{ $_ := set $props "ssl.ca.location" (printf "/etc/storepulse/kafka-tls/%s" $tls.caKey) }}{{ end }}
{{- if and $tls.existingSecret $tls.certKey }}{{ $_ := set $props "ssl.certificate.location" (printf "/etc/storepulse/kafka-tls/%s" $tls.certKey) }}{{ end }}
{{- if and $tls.existingSecret $tls.keyKey }}{{ $_ := set $props "ssl.key.location" (printf "/etc/storepulse/kafka-tls/%s" $tls.keyKey) }}{{ end }}
{{- end }}
{{- if $sasl.enabled }}{{ $_ := set $props "sasl.mechanism" $sasl.mechanism }}{{ end }}
{{- if $props }}{{ $_ := set $kafka "properties" $props }}{{ end }}
{{- if $kafka }}{{ $_ := set $cfg "kafka" $kafka }}{{ end }}
{{- if $svc }}
{{- $own := deepCopy (default dict $svc.config) -}}
{{- if $svc.listenKey }}{{ $_ := set $own $svc.listenKey (printf "0.0.0.0:%d" (int $svc.port)) }}{{ end }}
{{- if eq .name "rules" }}{{ $_ := set $own "rules_file" "/etc/storepulse/config/rules.toml" }}{{ end }}
{{- if eq .name "notifier" }}{{ $_ := set $own "policy_file" "/etc/storepulse/config/policy.toml" }}{{ end }}
{{- $_ := set $cfg .name $own -}}
{{- end -}}
# StorePulse configuration of {{ .name }} (rendered by the Helm chart; keys as in
# config/storepulse.example.toml). Secrets come from the environment.
{{ include "storepulse.tomlTable" (dict "prefix" "" "table" $cfg) | trim }}
{{- end -}}

{{/* Environment shared by every StorePulse container: config file, secrets. */}}
{{- define "storepulse.env" -}}
{{- $root := .root -}}
- name: STOREPULSE_CONFIG
  value: /etc/storepulse/config/storepulse.toml
- name: STOREPULSE_POSTGRES__URL
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.postgres.existingSecret }}
      key: {{ $root.Values.postgres.urlKey }}
{{- if $root.Values.kafka.sasl.enabled }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.existingSecret is required when kafka.sasl.enabled" $root.Values.kafka.sasl.existingSecret }}
      key: {{ $root.Values.kafka.sasl.usernameKey }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.kafka.sasl.existingSecret }}
      key: {{ $root.Values.kafka.sasl.passwordKey }}
# Kubernetes expands $(VAR) from the variables above; the loader merges this table
# into [kafka.properties] of the file.
- name: STOREPULSE_KAFKA__PROPERTIES
  value: '{"sasl.username"="$(KAFKA_SASL_USERNAME)","sasl.password"="$(KAFKA_SASL_PASSWORD)"}'
{{- end }}
{{- range $k := keys (default dict .env) | sortAlpha }}
- name: {{ $k }}
  value: {{ index $.env $k | toString | quote }}
{{- end }}
{{- end -}}

{{- define "storepulse.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "storepulse.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Volumes every StorePulse pod mounts; call with (dict "root" $ "name" n). */}}
{{- define "storepulse.volumes" -}}
- name: config
  configMap:
    name: {{ include "storepulse.componentName" . }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if and .root.Values.kafka.tls.enabled .root.Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .root.Values.kafka.tls.existingSecret }}
{{- end }}
{{- end -}}

{{- define "storepulse.volumeMounts" -}}
- name: config
  mountPath: /etc/storepulse/config
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if and .root.Values.kafka.tls.enabled .root.Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/storepulse/kafka-tls
  readOnly: true
{{- end }}
{{- end -}}
