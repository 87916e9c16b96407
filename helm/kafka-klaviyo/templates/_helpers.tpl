{{/* Names, labels and the pieces every workload of the chart shares. */}}

{{- define "kafka-klaviyo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kafka-klaviyo.fullname" -}}
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

{{- define "kafka-klaviyo.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kafka-klaviyo.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kafka-klaviyo.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kafka-klaviyo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The consumer group's pods only (not the Jobs'). */}}
{{- define "kafka-klaviyo.consumerSelectorLabels" -}}
{{ include "kafka-klaviyo.selectorLabels" . }}
app.kubernetes.io/component: consumer
{{- end -}}

{{- define "kafka-klaviyo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kafka-klaviyo.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kafka-klaviyo.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "kafka-klaviyo.metricsServiceName" -}}
{{- printf "%s-metrics" (include "kafka-klaviyo.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Where the chart mounts things: the consumer's settings point here. */}}
{{- define "kafka-klaviyo.configDir" -}}/etc/kafka-klaviyo{{- end -}}
{{- define "kafka-klaviyo.rulesDir" -}}/etc/kafka-klaviyo/rules{{- end -}}
{{- define "kafka-klaviyo.apiKeysDir" -}}/var/run/secrets/kafka-klaviyo/api-keys{{- end -}}
{{- define "kafka-klaviyo.kafkaTlsDir" -}}/var/run/secrets/kafka-klaviyo/kafka-tls{{- end -}}

{{- define "kafka-klaviyo.apiKeysSecretName" -}}
{{- .Values.klaviyo.existingSecret | default (printf "%s-klaviyo" (include "kafka-klaviyo.fullname" .)) -}}
{{- end -}}

{{/*
The Klaviyo accounts that need a key, as the consumer decides it (consumer/compose.py,
klaviyo_clients): every named account, and "default" unless routing sends nothing there.
A comma-joined list.
*/}}
{{- define "kafka-klaviyo.accounts" -}}
{{- $accounts := keys (.Values.config.accounts | default dict) | sortAlpha -}}
{{- $routing := .Values.config.routing -}}
{{- $needsDefault := or (not $routing) (not $accounts) -}}
{{- if $routing -}}
{{- if or (has "default" (values ($routing.accounts | default dict))) (eq ($routing.default_account | default "") "default") -}}
{{- $needsDefault = true -}}
{{- end -}}
{{- end -}}
{{- if $needsDefault -}}
{{- $accounts = prepend $accounts "default" -}}
{{- end -}}
{{- join "," $accounts -}}
{{- end -}}

{{/*
config.yaml: the values' config with what the chart owns set on top (the metrics port, the
rules directory, the API key files, the Kafka security settings).
*/}}
{{- define "kafka-klaviyo.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) -}}
{{- if hasKey ($cfg.observability | default dict) "metrics_port" -}}
{{- fail "config.observability.metrics_port: set by the chart; use metrics.port" -}}
{{- end -}}
{{- if hasKey ($cfg.rules | default dict) "dirs" -}}
{{- fail "config.rules.dirs: set by the chart; give the rule files in rules" -}}
{{- end -}}
{{- if or (hasKey ($cfg.klaviyo | default dict) "api_key_file") (hasKey ($cfg.klaviyo | default dict) "api_key") -}}
{{- fail "config.klaviyo: the API key is mounted by the chart; use klaviyo.apiKeys or klaviyo.existingSecret" -}}
{{- end -}}
{{- range $name, $account := ($cfg.accounts | default dict) -}}
{{- if or (hasKey ($account | default dict) "api_key_file") (hasKey ($account | default dict) "api_key_env") -}}
{{- fail (printf "config.accounts.%s: its API key is mounted by the chart; use klaviyo.apiKeys.%s or klaviyo.existingSecret" $name $name) -}}
{{- end -}}
{{- end -}}
{{- range $key := list "security.protocol" "sasl.mechanism" "sasl.username" "sasl.password" "ssl.ca.location" "ssl.certificate.location" "ssl.key.location" -}}
{{- if hasKey (($cfg.kafka | default dict).properties | default dict) $key -}}
{{- fail (printf "config.kafka.properties.%s: set by the chart from kafka.securityProtocol, kafka.sasl and kafka.tls" $key) -}}
{{- end -}}
{{- end -}}
{{- $obs := deepCopy ($cfg.observability | default dict) -}}
{{- $_ := set $obs "metrics_port" (int .Values.metrics.port) -}}
{{- $_ := set $cfg "observability" $obs -}}
{{- if .Values.rules -}}
{{- $rules := deepCopy ($cfg.rules | default dict) -}}
{{- $_ := set $rules "dirs" (list (include "kafka-klaviyo.rulesDir" .)) -}}
{{- $_ := set $cfg "rules" $rules -}}
{{- end -}}
{{- $keysDir := include "kafka-klaviyo.apiKeysDir" . -}}
{{- $named := deepCopy ($cfg.accounts | default dict) -}}
{{- range $name := splitList "," (include "kafka-klaviyo.accounts" .) -}}
{{- if eq $name "default" -}}
{{- $klaviyo := deepCopy ($cfg.klaviyo | default dict) -}}
{{- $_ := set $klaviyo "api_key_file" (printf "%s/default" $keysDir) -}}
{{- $_ := set $cfg "klaviyo" $klaviyo -}}
{{- else -}}
{{- $account := deepCopy (get $named $name | default dict) -}}
{{- $_ := set $account "api_key_file" (printf "%s/%s" $keysDir $name) -}}
{{- $_ := set $named $name $account -}}
{{- end -}}
{{- end -}}
{{- if $named -}}
{{- $_ := set $cfg "accounts" $named -}}
{{- end -}}
{{- $kafka := deepCopy ($cfg.kafka | default dict) -}}
{{- $props := deepCopy ($kafka.properties | default dict) -}}
{{- $protocol := .Values.kafka.securityProtocol -}}
{{- if ne $protocol "PLAINTEXT" -}}
{{- $_ := set $props "security.protocol" $protocol -}}
{{- end -}}
{{- if hasPrefix "SASL_" $protocol -}}
{{- $_ := set $props "sasl.mechanism" .Values.kafka.sasl.mechanism -}}
{{- end -}}
{{- if and (hasSuffix "SSL" $protocol) .Values.kafka.tls.existingSecret -}}
{{- $tlsDir := include "kafka-klaviyo.kafkaTlsDir" . -}}
{{- $_ := set $props "ssl.ca.location" (printf "%s/%s" $tlsDir .Values.kafka.tls.caKey) -}}
{{- if .Values.kafka.tls.certKey -}}
{{- $_ := set $props "ssl.certificate.location" (printf "%s/%s" $tlsDir .Values.kafka.tls.certKey) -}}
{{- $_ := set $props "ssl.key.location" (printf "%s/%s" $tlsDir .Values.kafka.tls.keyKey) -}}
{{- end -}}
{{- end -}}
{{- if hasSuffix "SSL" $protocol -}}
{{- $_ := set $props "ssl.endpoint.identification.algorithm" .Values.kafka.tls.endpointIdentification -}}
{{- end -}}
{{- $_ := set $kafka "properties" $props -}}
{{- $_ := set $cfg "kafka" $kafka -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The drain's worst case after SIGTERM, in whole seconds (see values.yaml). */}}
{{- define "kafka-klaviyo.drainSeconds" -}}
{{- $delivery := .Values.config.delivery | default dict -}}
{{- $deadLetter := .Values.config.dead_letter | default dict -}}
{{- $grace := $delivery.shutdown_grace_s | default 30 | float64 -}}
{{- $flush := $deadLetter.flush_min_s | default 5 | float64 -}}
{{- addf $grace $flush | ceil | int -}}
{{- end -}}

{{- define "kafka-klaviyo.terminationGracePeriodSeconds" -}}
{{- $drain := include "kafka-klaviyo.drainSeconds" . | int -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $drain .Values.closeMarginSeconds -}}
{{- else if le (int .Values.terminationGracePeriodSeconds) $drain -}}
{{- fail (printf "terminationGracePeriodSeconds: %v must be above the drain's %d s (config delivery.shutdown_grace_s + dead_letter.flush_min_s)" .Values.terminationGracePeriodSeconds $drain) -}}
{{- else -}}
{{- .Values.terminationGracePeriodSeconds | int -}}
{{- end -}}
{{- end -}}

{{/* Checksums that roll the pods when their settings or rules change. */}}
{{- define "kafka-klaviyo.checksums" -}}
checksum/config: {{ include "kafka-klaviyo.config" . | sha256sum }}
checksum/rules: {{ toYaml .Values.rules | sha256sum }}
{{- if .Values.klaviyo.apiKeys }}
checksum/api-keys: {{ toYaml .Values.klaviyo.apiKeys | sha256sum }}
{{- end }}
{{- end -}}

{{/* Environment of every container: the config file, a writable home, secrets by variable. */}}
{{- define "kafka-klaviyo.env" -}}
- name: KAFKA_KLAVIYO_CONFIG
  value: {{ include "kafka-klaviyo.configDir" . }}/config.yaml
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
{{- if and (hasPrefix "SASL_" .Values.kafka.securityProtocol) .Values.kafka.sasl.existingSecret }}
# librdkafka has no file option for SASL credentials: they come as kafka.properties variables.
- name: KAFKA_KLAVIYO_KAFKA__PROPERTIES__SASL.USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: KAFKA_KLAVIYO_KAFKA__PROPERTIES__SASL.PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if .Values.schemaRegistry.basicAuthSecret }}
- name: KAFKA_KLAVIYO_SCHEMA_REGISTRY__PROPERTIES__BASIC.AUTH.CREDENTIALS.SOURCE
  value: USER_INFO
- name: KAFKA_KLAVIYO_SCHEMA_REGISTRY__PROPERTIES__BASIC.AUTH.USER.INFO
  valueFrom:
    secretKeyRef:
      name: {{ .Values.schemaRegistry.basicAuthSecret }}
      key: {{ .Values.schemaRegistry.basicAuthKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kafka-klaviyo.volumeMounts" -}}
- name: config
  mountPath: {{ include "kafka-klaviyo.configDir" . }}/config.yaml
  subPath: config.yaml
  readOnly: true
{{- if .Values.rules }}
- name: rules
  mountPath: {{ include "kafka-klaviyo.rulesDir" . }}
  readOnly: true
{{- end }}
- name: api-keys
  mountPath: {{ include "kafka-klaviyo.apiKeysDir" . }}
  readOnly: true
{{- if and (hasSuffix "SSL" .Values.kafka.securityProtocol) .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: {{ include "kafka-klaviyo.kafkaTlsDir" . }}
  readOnly: true
{{- end }}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "kafka-klaviyo.volumes" -}}
- name: config
  configMap:
    name: {{ include "kafka-klaviyo.fullname" . }}-config
{{- if .Values.rules }}
- name: rules
  configMap:
    name: {{ include "kafka-klaviyo.fullname" . }}-rules
{{- end }}
- name: api-keys
  secret:
    secretName: {{ include "kafka-klaviyo.apiKeysSecretName" . }}
    defaultMode: 0440
    items:
    {{- range $name := splitList "," (include "kafka-klaviyo.accounts" .) }}
      - key: {{ get $.Values.klaviyo.existingSecretKeys $name | default $name }}
        path: {{ $name }}
    {{- end }}
{{- if and (hasSuffix "SSL" .Values.kafka.securityProtocol) .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: {{ .Values.kafka.tls.caKey }}
      {{- if .Values.kafka.tls.certKey }}
      - key: {{ .Values.kafka.tls.certKey }}
        path: {{ .Values.kafka.tls.certKey }}
      - key: {{ .Values.kafka.tls.keyKey }}
        path: {{ .Values.kafka.tls.keyKey }}
      {{- end }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpDir.sizeLimit }}
{{- end -}}

{{/* The pod spec parts every workload shares (the consumer's container adds ports and probes). */}}
{{- define "kafka-klaviyo.podCommon" -}}
serviceAccountName: {{ include "kafka-klaviyo.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
volumes:
  {{- include "kafka-klaviyo.volumes" . | nindent 2 }}
{{- end -}}

{{/* A one-shot container running `kafka-klaviyo <args>` with the service's settings. */}}
{{- define "kafka-klaviyo.jobContainer" -}}
{{- $ := index . 0 -}}
{{- $args := index . 1 -}}
{{- $resources := index . 2 -}}
- name: kafka-klaviyo
  image: {{ include "kafka-klaviyo.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  args:
    {{- toYaml $args | nindent 4 }}
  env:
    {{- include "kafka-klaviyo.env" $ | nindent 4 }}
  {{- with $.Values.extraEnvFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $.Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml ($resources | default $.Values.resources) | nindent 4 }}
  volumeMounts:
    {{- include "kafka-klaviyo.volumeMounts" $ | nindent 4 }}
{{- end -}}
