{{/* Chart name, at most 63 characters. */}}
{{- define "kubedojo-data-api.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: fullnameOverride, else the release name when it already contains the
chart name, else <release>-<chart>. Release "kubedojo-data-api" gives
"kubedojo-data-api", the name manifests/ uses.
*/}}
{{- define "kubedojo-data-api.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Namespace of the namespaced objects. */}}
{{- define "kubedojo-data-api.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{- define "kubedojo-data-api.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades, never add to them. */}}
{{- define "kubedojo-data-api.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubedojo-data-api.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "kubedojo-data-api.labels" -}}
helm.sh/chart: {{ include "kubedojo-data-api.chart" . }}
{{ include "kubedojo-data-api.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: aggregated-apiserver
app.kubernetes.io/part-of: kubedojo
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kubedojo-data-api.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubedojo-data-api.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kubedojo-data-api.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
RBAC object names. With full name "kubedojo-data-api" they are exactly
manifests/rbac.yaml's: system:kubedojo-data-api,
kubedojo-data-api:system:auth-delegator, kubedojo-data-api-auth-reader and
system:kubedojo-aggregated-reader.
*/}}
{{- define "kubedojo-data-api.clusterRoleName" -}}
system:{{ include "kubedojo-data-api.fullname" . }}
{{- end }}
{{- define "kubedojo-data-api.authDelegatorName" -}}
{{ include "kubedojo-data-api.fullname" . }}:system:auth-delegator
{{- end }}
{{- define "kubedojo-data-api.membersName" -}}
{{- printf "%s-members" (include "kubedojo-data-api.fullname" .) }}
{{- end }}

{{- define "kubedojo-data-api.authReaderName" -}}
{{ include "kubedojo-data-api.fullname" . }}-auth-reader
{{- end }}
{{- define "kubedojo-data-api.aggregatedReaderName" -}}
system:{{ include "kubedojo-data-api.fullname" . | trimSuffix "-data-api" }}-aggregated-reader
{{- end }}

{{/* Name of the Secret holding the serving certificate (helm, cert-manager, existingSecret). */}}
{{- define "kubedojo-data-api.tlsSecretName" -}}
{{- if eq .Values.tls.type "existingSecret" }}
{{- required "tls.existingSecret.name is required when tls.type is existingSecret" .Values.tls.existingSecret.name }}
{{- else }}
{{- include "kubedojo-data-api.fullname" . }}-tls
{{- end }}
{{- end }}

{{/* DNS names of the serving certificate: the Service's names. */}}
{{- define "kubedojo-data-api.dnsNames" -}}
{{- $svc := include "kubedojo-data-api.fullname" . }}
{{- $ns := include "kubedojo-data-api.namespace" . }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.%s" $svc $ns .Values.tls.clusterDomain) | toJson }}
{{- end }}

{{/*
insecureSkipTLSVerify as rendered on the APIServices: always true for tls.type
self (the generated certificate has no CA to trust), else the value.
*/}}
{{- define "kubedojo-data-api.insecureSkipTLSVerify" -}}
{{- if or (eq .Values.tls.type "self") .Values.apiService.insecureSkipTLSVerify }}true{{ else }}false{{ end }}
{{- end }}

{{/*
The helm-mode CA and certificate, generated once per render and memoised in
.Values (so the Secret and both APIServices get the same CA), or reused from the
existing Secret found with lookup. Returns a dict with ca.crt, tls.crt, tls.key
(PEM).
*/}}
{{- define "kubedojo-data-api.helmCert" -}}
{{- if not (hasKey .Values "__kubedojoHelmCert") }}
{{- $secretName := include "kubedojo-data-api.tlsSecretName" . }}
{{- $ns := include "kubedojo-data-api.namespace" . }}
{{- $found := dict }}
{{- if .Values.tls.helm.lookup }}
{{- $existing := lookup "v1" "Secret" $ns $secretName }}
{{- if and $existing $existing.data }}
{{- if and (index $existing.data "ca.crt") (index $existing.data "tls.crt") (index $existing.data "tls.key") }}
{{- $found = dict "ca.crt" (index $existing.data "ca.crt" | b64dec) "tls.crt" (index $existing.data "tls.crt" | b64dec) "tls.key" (index $existing.data "tls.key" | b64dec) "reused" true }}
{{- end }}
{{- end }}
{{- end }}
{{- if not $found }}
{{- $days := int .Values.tls.helm.certDurationDays }}
{{- $ca := genCA (printf "%s-ca" (include "kubedojo-data-api.fullname" .)) $days }}
{{- $svc := include "kubedojo-data-api.fullname" . }}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc $ns) nil (include "kubedojo-data-api.dnsNames" . | fromJsonArray) $days $ca }}
{{- $found = dict "ca.crt" $ca.Cert "tls.crt" $cert.Cert "tls.key" $cert.Key "reused" false }}
{{- end }}
{{- $_ := set .Values "__kubedojoHelmCert" $found }}
{{- end }}
{{- toJson (get .Values "__kubedojoHelmCert") }}
{{- end }}

{{/*
caBundle (base64 PEM) for the APIServices, or "" when none is known at render
time (self, cert-manager via injection, insecureSkipTLSVerify).
*/}}
{{- define "kubedojo-data-api.caBundle" -}}
{{- if eq (include "kubedojo-data-api.insecureSkipTLSVerify" .) "false" }}
{{- if eq .Values.tls.type "helm" }}
{{- index (include "kubedojo-data-api.helmCert" . | fromJson) "ca.crt" | b64enc }}
{{- else if eq .Values.tls.type "existingSecret" }}
{{- if .Values.tls.existingSecret.caBundle }}
{{- .Values.tls.existingSecret.caBundle | b64enc }}
{{- else if and (not .Values.tls.existingSecret.injectCAFrom) .Values.tls.existingSecret.lookup }}
{{- $existing := lookup "v1" "Secret" (include "kubedojo-data-api.namespace" .) .Values.tls.existingSecret.name }}
{{- if and $existing $existing.data (index $existing.data "ca.crt") }}
{{- index $existing.data "ca.crt" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the cert-manager Certificate (tls.type cert-manager). */}}
{{- define "kubedojo-data-api.certificateName" -}}
{{- default (include "kubedojo-data-api.fullname" .) .Values.tls.certManager.certificateName }}
{{- end }}

{{/* The cert-manager.io/inject-ca-from value for the APIServices, or "". */}}
{{- define "kubedojo-data-api.injectCAFrom" -}}
{{- if eq (include "kubedojo-data-api.insecureSkipTLSVerify" .) "false" }}
{{- if and (eq .Values.tls.type "cert-manager") .Values.tls.certManager.addInjectorAnnotations }}
{{- printf "%s/%s" (include "kubedojo-data-api.namespace" .) (include "kubedojo-data-api.certificateName" .) }}
{{- else if and (eq .Values.tls.type "existingSecret") (not .Values.tls.existingSecret.caBundle) .Values.tls.existingSecret.injectCAFrom }}
{{- .Values.tls.existingSecret.injectCAFrom }}
{{- end }}
{{- end }}
{{- end }}

{{/* Where the serving certificate and records are mounted. */}}
{{- define "kubedojo-data-api.tlsMountPath" -}}/etc/kubedojo-data-api/tls{{- end }}
{{- define "kubedojo-data-api.recordsMountPath" -}}/etc/kubedojo-data-api/records{{- end }}

{{/* The records ConfigMap name, or "" when the built-in records are served. */}}
{{- define "kubedojo-data-api.recordsConfigMap" -}}
{{- if .Values.records.existingConfigMap }}
{{- .Values.records.existingConfigMap }}
{{- else if .Values.records.inline }}
{{- include "kubedojo-data-api.fullname" . }}-records
{{- end }}
{{- end }}

{{- define "kubedojo-data-api.sourcesMountPath" -}}/etc/kubedojo-data-api/sources{{- end }}
{{- define "kubedojo-data-api.postgresMountPath" -}}/etc/kubedojo-data-api/postgres{{- end }}

{{/*
The sources ConfigMap name, or "" when the server's defaults (the lab's records plus the
computed ones) are what the values ask for.
*/}}
{{- define "kubedojo-data-api.sourcesConfigMap" -}}
{{- $c := .Values.sources.computed }}
{{- if or (include "kubedojo-data-api.recordsConfigMap" .) .Values.sources.postgres.enabled .Values.sources.postgresQuery.enabled (not $c.enabled) (ne $c.namespace "kubedojo-metrics") }}
{{- include "kubedojo-data-api.fullname" . }}-sources
{{- end }}
{{- end }}

{{/* The --sources-config file (docs/datarecords.md), in source order. */}}
{{- define "kubedojo-data-api.sourcesConfig" -}}
{{- $connections := list }}
{{- $sources := list }}
{{- if include "kubedojo-data-api.recordsConfigMap" . }}
{{- $sources = append $sources (dict "kind" "file" "path" (printf "%s/%s" (include "kubedojo-data-api.recordsMountPath" .) .Values.records.key)) }}
{{- else }}
{{- $sources = append $sources (dict "kind" "file") }}
{{- end }}
{{- $pg := .Values.sources.postgres }}
{{- $pq := .Values.sources.postgresQuery }}
{{- if or $pg.enabled $pq.enabled }}
{{- $conn := dict "name" "main" "dsnFrom" (dict "file" (printf "%s/dsn" (include "kubedojo-data-api.postgresMountPath" .))) }}
{{- with $pg.maxConnections }}
{{- $_ := set $conn "maxConnections" (int .) }}
{{- end }}
{{- with $pg.tlsMode }}
{{- $_ := set $conn "tls" (dict "mode" .) }}
{{- end }}
{{- $connections = append $connections $conn }}
{{- end }}
{{- if $pg.enabled }}
{{- $source := dict "kind" "postgres" "connection" "main" }}
{{- with $pg.schema }}
{{- $_ := set $source "schema" . }}
{{- end }}
{{- $sources = append $sources $source }}
{{- end }}
{{- if $pq.enabled }}
{{- $cm := dict "namespace" (include "kubedojo-data-api.queryConfigMapNamespace" .) "name" $pq.configMap.name "key" $pq.configMap.key }}
{{- $sources = append $sources (dict "kind" "postgresQuery" "connection" "main" "configMap" $cm) }}
{{- end }}
{{- if .Values.sources.computed.enabled }}
{{- $sources = append $sources (dict "kind" "computed" "namespace" .Values.sources.computed.namespace) }}
{{- end }}
{{- toYaml (dict "connections" $connections "sources" $sources) }}
{{- end }}

{{/* Container args: derived flags first, then defaultArgs, then args. */}}
{{- define "kubedojo-data-api.args" -}}
{{- $args := list (printf "--secure-port=%d" (int .Values.containerPort)) }}
{{- if eq .Values.tls.type "self" }}
{{- $args = append $args "--cert-dir=/tmp" }}
{{- else }}
{{- $dir := include "kubedojo-data-api.tlsMountPath" . }}
{{- $args = append $args (printf "--tls-cert-file=%s/tls.crt" $dir) }}
{{- $args = append $args (printf "--tls-private-key-file=%s/tls.key" $dir) }}
{{- end }}
{{- if include "kubedojo-data-api.sourcesConfigMap" . }}
{{- $args = append $args (printf "--sources-config=%s/sources.yaml" (include "kubedojo-data-api.sourcesMountPath" .)) }}
{{- end }}
{{- with .Values.records.refreshInterval }}
{{- $args = append $args (printf "--records-refresh-interval=%s" .) }}
{{- end }}
{{- if .Values.shutdownDelaySeconds }}
{{- $args = append $args (printf "--shutdown-delay-duration=%ds" (int .Values.shutdownDelaySeconds)) }}
{{- end }}
{{- if .Values.metrics.enabled }}
{{- $args = append $args "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics" }}
{{- end }}
{{- $ha := list }}
{{- if .Values.sharding.enabled }}
{{- $ha = append $ha (printf "--peer-port=%d" (int .Values.sharding.peerPort)) }}
{{- $ha = append $ha (printf "--scrape-replication=%d" (int .Values.sharding.scrapeReplication)) }}
{{- end }}
{{- if .Values.goawayChance }}
{{- $ha = append $ha (printf "--goaway-chance=%v" .Values.goawayChance) }}
{{- end }}
{{- toYaml (concat $args .Values.defaultArgs $ha .Values.args) }}
{{- end }}

{{/* Namespace of the ConfigMap of postgresQuery definitions (default: the release's). */}}
{{- define "kubedojo-data-api.queryConfigMapNamespace" -}}
{{- .Values.sources.postgresQuery.configMap.namespace | default (include "kubedojo-data-api.namespace" .) }}
{{- end }}

{{/* Render-time checks that the schema cannot express. */}}
{{- define "kubedojo-data-api.validate" -}}
{{- if and .Values.sources.postgres.enabled (not .Values.sources.postgres.existingSecret) }}
{{- fail "sources.postgres.enabled needs sources.postgres.existingSecret (the Secret holding the DSN; never a value in clear)" }}
{{- end }}
{{- if and .Values.sources.postgresQuery.enabled (not .Values.sources.postgres.existingSecret) }}
{{- fail "sources.postgresQuery.enabled needs sources.postgres.existingSecret (the Secret holding the DSN of the connection its queries use)" }}
{{- end }}
{{- if and .Values.sources.postgresQuery.enabled (not .Values.sources.postgresQuery.configMap.name) }}
{{- fail "sources.postgresQuery.enabled needs sources.postgresQuery.configMap.name (the ConfigMap holding the record definitions)" }}
{{- end }}
{{- if and .Values.records.existingConfigMap .Values.records.inline }}
{{- fail "set either records.inline or records.existingConfigMap, not both" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.enabled (the ServiceMonitor scrapes /metrics without credentials)" }}
{{- end }}
{{- if eq .Values.tls.type "existingSecret" }}
{{- $_ := include "kubedojo-data-api.tlsSecretName" . }}
{{- if and (eq (include "kubedojo-data-api.insecureSkipTLSVerify" .) "false") (not (or .Values.tls.existingSecret.caBundle .Values.tls.existingSecret.injectCAFrom .Values.tls.existingSecret.lookup)) }}
{{- fail "tls.type existingSecret needs a CA for the APIServices: set tls.existingSecret.caBundle, tls.existingSecret.injectCAFrom or tls.existingSecret.lookup (or apiService.insecureSkipTLSVerify)" }}
{{- end }}
{{- end }}
{{- if and .Values.sharding.enabled (eq (int .Values.sharding.peerPort) (int .Values.containerPort)) }}
{{- fail "sharding.peerPort must differ from containerPort (the peer listener is a second port)" }}
{{- end }}
{{- if le (int .Values.terminationGracePeriodSeconds) (add (int .Values.shutdownDelaySeconds) 20) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed shutdownDelaySeconds (%d) + the 20 s drain timeout, or the kubelet kills the server mid-drain" (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownDelaySeconds)) }}
{{- end }}
{{- if and .Values.hostNetwork.enabled (eq (int .Values.containerPort) 10250) }}
{{- fail "hostNetwork.enabled with containerPort 10250 would collide with the kubelet's port: set containerPort (e.g. 4443)" }}
{{- end }}
{{- end }}
