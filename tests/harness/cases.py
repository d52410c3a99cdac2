"""Output-file and config cases with the verdicts of shell-operator v1.20.3's own Go code.

The expected values were measured by running each input through the Go functions
shell-operator uses (``admission.ResponseFromFile``, ``hook.MetricOperationsFromFile`` +
metrics-storage ``ApplyBatchOperations``, ``object_patch.ParseOperations``,
``config.HookConfig.LoadAndValidate``) once, during development, with a throwaway Go
program that is not part of this repository.  test_harness.py checks the harness
against them.
"""

# (id, response file text, expected): None = no response (empty file), "error" = bad
# response (hook failed), else the decoded struct with ``patch`` as base64 text.
ADMISSION = [
    ("allow", '{"allowed":true}', {"allowed": True, "message": "", "warnings": [], "patch": ""}),
    ("empty", "", None),
    ("only-newline", "\n", "error"),
    ("garbage-after-value", '{"allowed":true}garbage',
     {"allowed": True, "message": "", "warnings": [], "patch": ""}),
    ("second-value-ignored", '{"allowed":true}\n{"allowed":false}',
     {"allowed": True, "message": "", "warnings": [], "patch": ""}),
    ("top-level-array", '[{"allowed":true}]', "error"),
    ("null", "null", {"allowed": False, "message": "", "warnings": [], "patch": ""}),
    ("case-insensitive-keys", '{"Allowed":true,"Message":"x","patch":"W10="}',
     {"allowed": True, "message": "x", "warnings": [], "patch": "W10="}),
    ("last-duplicate-wins", '{"allowed":true,"ALLOWED":false}',
     {"allowed": False, "message": "", "warnings": [], "patch": ""}),
    ("patch-raw-array", '{"allowed":true,"patch":[{"op":"add","path":"/a","value":1}]}', "error"),
    ("patch-byte-array", '{"allowed":true,"patch":[1]}',
     {"allowed": True, "message": "", "warnings": [], "patch": "AQ=="}),
    ("patch-unpadded", '{"allowed":true,"patch":"W10"}', "error"),
    ("patch-overpadded", '{"allowed":true,"patch":"W10=="}', "error"),
    ("patch-urlsafe", '{"allowed":true,"patch":"W-0="}', "error"),
    ("patch-space", '{"allowed":true,"patch":"W1 0="}', "error"),
    ("patch-newline", '{"allowed":true,"patch":"W1\\n0="}',
     {"allowed": True, "message": "", "warnings": [], "patch": "W10="}),
    ("patch-number", '{"allowed":true,"patch":5}', "error"),
    ("patch-null", '{"allowed":true,"patch":null}',
     {"allowed": True, "message": "", "warnings": [], "patch": ""}),
    ("allowed-string", '{"allowed":"true"}', "error"),
    ("allowed-number", '{"allowed":1}', "error"),
    ("allowed-null", '{"allowed":null}', {"allowed": False, "message": "", "warnings": [], "patch": ""}),
    ("message-number", '{"allowed":true,"message":5}', "error"),
    ("warnings-string", '{"allowed":true,"warnings":"x"}', "error"),
    ("warnings-number", '{"allowed":true,"warnings":[1]}', "error"),
    ("bom", '\ufeff{"allowed":true}', "error"),
    ("broken-unknown-key", '{"allowed":true,"x":[1,2}', "error"),
]

# (id, metric files of consecutive runs of hook "hk", per-run ok, final /metrics/hooks text)
METRICS = [
    ("gauge-counter-truncated",
     ['{"name":"a","action":"set","value":1,"labels":{"x":"1"}}\n{"name":"b","add":2.7}\n'],
     [True], ('# HELP a a\n# TYPE a gauge\na{hook="hk",x="1"} 1\n'
             '# HELP b b\n# TYPE b counter\nb{hook="hk"} 2\n')),
    ("set-without-value", ['{"name":"a","action":"set"}\n'], [False], ""),
    ("unknown-action-dropped", ['{"name":"a","action":"bogus","value":1}\n{"name":"c","set":3}'],
     [True], '# HELP c c\n# TYPE c gauge\nc{hook="hk"} 3\n'),
    ("not-json", ["not json"], [False], ""),
    ("histogram", ['{"name":"a","action":"observe","value":3,"buckets":[1,5]}\n'], [True],
     ('# HELP a a\n# TYPE a histogram\na_bucket{hook="hk",le="1"} 0\na_bucket{hook="hk",le="5"} 1\n'
     'a_bucket{hook="hk",le="+Inf"} 1\na_sum{hook="hk"} 3\na_count{hook="hk"} 1\n')),
    ("hook-label-wins", ['{"name":"q","action":"set","value":1,"labels":{"hook":"override"}}'],
     [True], '# HELP q q\n# TYPE q gauge\nq{hook="hk"} 1\n'),
    ("top-level-array", ['[{"name":"a","set":1}]'], [False], ""),
    ("garbage-after-value", ['{"name":"a","set":1}garbage'], [False], ""),
    ("null-document", ['null\n{"name":"z","set":1}'], [True], '# HELP z z\n# TYPE z gauge\nz{hook="hk"} 1\n'),
    ("set-and-add", ['{"name":"a","set":1,"add":2}'], [True], ""),
    ("value-string", ['{"name":"a","set":"1"}'], [False], ""),
    ("label-number", ['{"name":"a","set":1,"labels":{"k":1}}'], [False], ""),
    ("observe-null-buckets", ['{"name":"h","action":"observe","value":3,"buckets":null}'], [False], ""),
    ("empty-name", ['{"name":"","action":"set","value":1}'], [False], ""),
    ("whitespace-only", ["   \n"], [True], ""),
    ("group-expiry-across-runs",
     ['{"name":"a","action":"set","value":1,"labels":{"x":"1"}}\n{"name":"b","add":2.7}\n',
      '{"name":"a","action":"set","value":5,"labels":{"x":"2"}}\n',
      '{"name":"a","action":"set","value":1,"group":"g1"}\n{"name":"q","set":1}',
      '{"action":"expire"}\n',
      '{"name":"b","action":"add","value":-1}\n'],
     [True] * 5,
     ('# HELP a a\n# TYPE a gauge\na{hook="hk",x=""} 1\n'
     '# HELP b b\n# TYPE b counter\nb{hook="hk"} 1.8446744073709552e+19\n')),
    ("empty-run-keeps-series", ['{"name":"a","set":1}', ""], [True, True],
     '# HELP a a\n# TYPE a gauge\na{hook="hk"} 1\n'),
    ("implicit-group-expiry",
     ['{"name":"a","set":1,"labels":{"x":"1"}}\n{"name":"b","set":1,"group":"g"}',
      '{"name":"a","set":2,"labels":{"x":"2"}}'],
     [True, True], '# HELP a a\n# TYPE a gauge\na{hook="hk",x="2"} 2\n# HELP b b\n# TYPE b gauge\nb{hook="hk"} 1\n'),
    ("explicit-group-survives", ['{"name":"a","set":1,"group":"g"}', '{"name":"b","set":2}'],
     [True, True], '# HELP a a\n# TYPE a gauge\na{hook="hk"} 1\n# HELP b b\n# TYPE b gauge\nb{hook="hk"} 2\n'),
]

# (id, patch file text, expected number of operations or "error")
PATCH = [
    ("unknown-key-dropped", '{"operation":"Delete","kind":"Pod","name":"x","foo":1}', 1),
    ("top-level-array", '[{"operation":"Delete","kind":"Pod","name":"x"}]', "error"),
    ("json-stream",
     ('{"operation":"MergePatch","kind":"ImageMap","namespace":"d","name":"x","subresource":"status",'
     '"mergePatch":{"status":{"a":1}}}\n'
     '{"operation":"Create","object":{"apiVersion":"v1","kind":"Event","metadata":{"name":"e"}}}'), 2),
    ("jsonpatch-first-op-without-value",
     '{"operation":"JSONPatch","kind":"Pod","name":"x","jsonPatch":[{"op":"remove","path":"/a"}]}', "error"),
    ("jsonpatch-later-op-without-value",
     ('{"operation":"JSONPatch","kind":"Pod","name":"x","jsonPatch":'
     '[{"op":"add","path":"/a","value":1},{"op":"remove","path":"/b"}]}'), 1),
    ("yaml-multi-doc",
     ("---\noperation: Delete\nkind: Pod\nname: x\n---\noperation: Create\nobject:\n"
     "  kind: ConfigMap\n  metadata: {name: c}\n"), 2),
    ("delete-without-name", '{"operation":"Delete","kind":"Pod"}', "error"),
    ("empty-merge-patch", '{"operation":"MergePatch","kind":"Pod","name":"x","mergePatch":{}}', "error"),
    ("json-keys-case-insensitive", '{"Operation":"Delete","Kind":"Pod","Name":"x"}', 1),
    ("kind-number-via-yaml", '{"operation":"Delete","kind":5,"name":"x"}', 1),
    ("unknown-operation", '{"operation":"Bogus","kind":"Pod","name":"x"}', "error"),
    ("create-empty-object", '{"operation":"Create","object":{}}', "error"),
    ("create-object-string",
     '{"operation":"Create","object":"apiVersion: v1\\nkind: ConfigMap\\nmetadata: {name: x}"}', 1),
    ("json-then-garbage", '{"operation":"Delete","kind":"Pod","name":"x"} garbage', "error"),
    ("jqpatch-empty-filter", '{"operation":"JQPatch","kind":"Pod","name":"x","jqFilter":""}', "error"),
    ("merge-patch-string", '{"operation":"MergePatch","kind":"Pod","name":"x","mergePatch":"spec:\\n  a: 1"}', 1),
    ("empty-file", "", 0),
    ("bool-as-yes-via-yaml", '{"operation":"Delete","kind":"Pod","name":"x","ignoreMissingObject":"yes"}', 1),
    ("extra-field-on-delete", '{"operation":"Delete","kind":"Pod","name":"x","object":{"a":1}}', 1),
    ("yaml-unknown-key", "operation: Delete\nkind: Pod\nname: x\nfoo: bar\n", 1),
    ("second-doc-invalid",
     '{"operation":"Delete","kind":"Pod","name":"x"}\n{"operation":"Delete","kind":"Pod"}', "error"),
    ("null-document", "null", "error"),
    ("jsonpatch-empty", '{"operation":"JSONPatch","kind":"Pod","name":"x","jsonPatch":[]}', "error"),
    ("jsonpatch-number-item", '{"operation":"JSONPatch","kind":"Pod","name":"x","jsonPatch":[1]}', "error"),
    ("create-object-array", '{"operation":"Create","object":[1]}', "error"),
    ("delete-empty-kind", '{"operation":"Delete","kind":"","name":"x"}', "error"),
    ("yaml-kind-number", "operation: Delete\nkind: 5\nname: x\n", 1),
    ("yaml-kind-sequence", "operation: Delete\nkind: [1]\nname: x\n", "error"),
    ("yaml-bool-number", "operation: Delete\nkind: Pod\nname: x\nignoreMissingObject: 1\n", "error"),
    ("yaml-duplicate-key", "operation: Delete\nkind: Pod\nname: x\nname: y\n", "error"),
    ("json-duplicate-key", '{"operation":"Delete","kind":"Pod","name":"x","name":"y"}', 1),
    ("yaml-top-level-list", "- operation: Delete\n  kind: Pod\n  name: x\n", "error"),
    ("json-docs-with-separator",
     '{"operation":"Delete","kind":"Pod","name":"x"}\n---\n{"operation":"Delete","kind":"Pod","name":"y"}\n', 2),
    ("comment-only", "# nothing\n", 0),
    ("merge-and-json-patch",
     ('{"operation":"MergePatch","kind":"Pod","name":"x","mergePatch":{"a":1},'
     '"jsonPatch":[{"op":"add","path":"/a","value":1}]}'), 1),
]

# (id, --config output, accepted by shell-operator at load).  All use configVersion v1.
CONFIG = [
    ("mutating-two-segments", "configVersion: v1\nkubernetesMutating:\n- name: a.b\n", True),
    ("validating-two-segments", "configVersion: v1\nkubernetesValidating:\n- name: a.b\n", False),
    ("validating-timeout-31", "configVersion: v1\nkubernetesValidating:\n- name: a.b.c\n  timeoutSeconds: 31\n", False),
    ("validating-timeout-0", "configVersion: v1\nkubernetesValidating:\n- name: a.b.c\n  timeoutSeconds: 0\n", False),
    ("mutating-timeout-31", "configVersion: v1\nkubernetesMutating:\n- name: a.b.c\n  timeoutSeconds: 31\n", True),
    ("mode", "configVersion: v1\nkubernetes:\n- kind: Pod\n  mode: Incremental\n", False),
    ("only-version", "configVersion: v1\n", False),
    ("settings-one-key", "configVersion: v1\nonStartup: 1\nsettings:\n  executionMinInterval: 1s\n", False),
    ("settings-both", ("configVersion: v1\nonStartup: 1\nsettings:\n  executionMinInterval: 1s\n"
                      "  executionBurst: 2\n"), True),
    ("settings-bad-duration", ("configVersion: v1\nsettings:\n  executionMinInterval: 1x\n"
                              "  executionBurst: 2\nonStartup: 1\n"), False),
    ("jq-does-not-compile", 'configVersion: v1\nkubernetes:\n- kind: Pod\n  jqFilter: ".a |"\n', False),
    ("label-key-invalid", ('configVersion: v1\nkubernetes:\n- kind: Pod\n  labelSelector:\n'
                          '    matchLabels:\n      "bad key!": x\n'), False),
    ("in-without-values", ("configVersion: v1\nkubernetes:\n- kind: Pod\n  labelSelector:\n"
                          "    matchExpressions:\n    - key: a\n      operator: In\n"), False),
    ("exists-with-values", ("configVersion: v1\nkubernetes:\n- kind: Pod\n  labelSelector:\n"
                           "    matchExpressions:\n    - key: a\n      operator: Exists\n      values: [x]\n"), False),
    ("include-unknown", "configVersion: v1\nkubernetes:\n- kind: Pod\n  name: a\n  includeSnapshotsFrom: [b]\n", False),
    ("admission-include-unknown", ("configVersion: v1\nkubernetes:\n- kind: Pod\n  name: a\n"
                                  "kubernetesMutating:\n- name: x.y.z\n  includeSnapshotsFrom: [b]\n"), False),
    ("include-ambiguous", ('configVersion: v1\nkubernetes:\n- kind: Pod\n  name: a\n- kind: Pod\n  name: a\n'
                          'schedule:\n- crontab: "* * * * *"\n  includeSnapshotsFrom: [a]\n'), False),
    ("include-self", "configVersion: v1\nkubernetes:\n- kind: Pod\n  name: a\n  includeSnapshotsFrom: [a]\n", True),
    ("api-version-two-slashes", "configVersion: v1\nkubernetes:\n- kind: Pod\n  apiVersion: a/b/c\n", False),
    ("crontab-4-fields", 'configVersion: v1\nschedule:\n- crontab: "* * * *"\n', False),
    ("crontab-5-fields", 'configVersion: v1\nschedule:\n- crontab: "*/5 * * * *"\n', True),
    ("crontab-every", 'configVersion: v1\nschedule:\n- crontab: "@every 1m"\n', True),
    ("crontab-7-fields", 'configVersion: v1\nschedule:\n- crontab: "0 0 * * * * *"\n', False),
    ("sync-flag-string",
     'configVersion: v1\nkubernetes:\n- kind: Pod\n  executeHookOnSynchronization: "false"\n', False),
    ("sync-flag-no", "configVersion: v1\nkubernetes:\n- kind: Pod\n  executeHookOnSynchronization: no\n", True),
    ("webhook-name-uppercase", "configVersion: v1\nkubernetesValidating:\n- name: A.b.c\n", False),
    ("webhook-name-duplicate", "configVersion: v1\nkubernetesValidating:\n- name: a.b.c\n- name: a.b.c\n", False),
    ("rule-wildcard-and-group", ('configVersion: v1\nkubernetesValidating:\n- name: a.b.c\n  rules:\n'
                                '  - apiGroups: ["*", "apps"]\n    apiVersions: [v1]\n    resources: [pods]\n'
                                '    operations: [CREATE]\n'), False),
    ("on-startup-float", "configVersion: v1\nonStartup: 1.5\n", False),
    ("json-config", '{"configVersion":"v1","onStartup":1}', True),
    ("version-v2", "configVersion: v2\nonStartup: 1\n", False),
    ("unknown-top-level-key", "configVersion: v1\nonStartup: 1\nfoo: 1\n", False),
    ("name-and-field-selector", ("configVersion: v1\nkubernetes:\n- kind: Pod\n  nameSelector:\n"
                                "    matchNames: [a]\n  fieldSelector:\n    matchExpressions:\n"
                                '    - field: metadata.name\n      operator: "="\n      value: a\n'), False),
    ("mutating-label-value", ('configVersion: v1\nkubernetesMutating:\n- name: a.b.c\n  labelSelector:\n'
                             '    matchLabels: {"a": "b c"}\n'), False),
    ("match-conditions", ('configVersion: v1\nkubernetesValidating:\n- name: a.b.c\n  failurePolicy: Fail\n'
                         '  sideEffects: None\n  matchConditions:\n  - name: x\n    expression: "true"\n'), True),
    ("empty-label-selector", "configVersion: v1\nkubernetes:\n- kind: Pod\n  labelSelector: {}\n", False),
    ("name-selector-list", "configVersion: v1\nkubernetes:\n- kind: Pod\n  nameSelector: [default]\n", False),
    ("execute-on-event-empty", "configVersion: v1\nkubernetes:\n- kind: Pod\n  executeHookOnEvent: []\n", True),
]
