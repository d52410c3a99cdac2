"""Kubernetes apimachinery checks that shell-operator runs on a hook's ``--config``.

Names, label selectors, group/version strings and admission webhook rules are
validated by k8s.io/apimachinery code inside shell-operator (or by the API server when
the webhook configuration is registered).  The rules are re-done here from the
upstream behaviour; each function returns a list of error strings (empty = valid).
"""
from __future__ import annotations

import re

_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def dns1123_subdomain(value: str) -> list[str]:
    """``IsDNS1123Subdomain``."""
    errors = []
    if len(value) > 253:
        errors.append(f"{value!r}: must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        errors.append(f"{value!r}: a lowercase RFC 1123 subdomain must consist of lower case "
                      "alphanumeric characters, '-' or '.'")
    return errors


def qualified_name(value: str) -> list[str]:
    """``IsQualifiedName``: ``[prefix/]name`` as used for label keys."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return [f"{value!r}: prefix part must be non-empty"]
        errors = dns1123_subdomain(prefix)
        if errors:
            return [f"{value!r}: prefix part {e}" for e in errors]
    else:
        return [(f"{value!r}: a qualified name must consist of alphanumeric characters, '-', '_' "
                 "or '.', with an optional DNS subdomain prefix and '/'")]
    if not name:
        return [f"{value!r}: name part must be non-empty"]
    if len(name) > 63:
        return [f"{value!r}: name part must be no more than 63 characters"]
    if not _NAME_PART.fullmatch(name):
        return [(f"{value!r}: name part must consist of alphanumeric characters, '-', '_' or '.', "
                 "and must start and end with an alphanumeric character")]
    return []


def label_value(value: str) -> list[str]:
    """``IsValidLabelValue``."""
    if len(value) > 63:
        return [f"{value!r}: must be no more than 63 characters"]
    if value and not _NAME_PART.fullmatch(value):
        return [(f"{value!r}: a valid label must be an empty string or consist of alphanumeric "
                 "characters, '-', '_' or '.', and must start and end with an alphanumeric character")]
    return []


def label_selector(selector: dict | None) -> list[str]:
    """``metav1.LabelSelectorAsSelector`` (and ``ValidateLabelSelector``) errors."""
    if not selector:
        return []
    errors = []
    for key, value in (selector.get("matchLabels") or {}).items():
        errors += qualified_name(key) + label_value(value or "")
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values") or []
        errors += qualified_name(key)
        if op in ("In", "NotIn"):
            if not values:
                errors.append(f"{key}: for 'in', 'notin' operators, values set can't be empty")
        elif op in ("Exists", "DoesNotExist"):
            if values:
                errors.append(f"{key}: values set must be empty for exists and does not exist")
        else:
            errors.append(f"{op!r} is not a valid label selector operator")
        for value in values:
            errors += label_value(value)
    return errors


def label_selector_matches(selector: dict | None, labels: dict | None) -> bool:
    """Whether ``labels`` satisfy a (valid) label selector; an empty selector matches all."""
    labels = labels or {}
    for key, value in ((selector or {}).get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in (selector or {}).get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def group_version(value: str) -> list[str]:
    """``schema.ParseGroupVersion``: at most one '/'."""
    if value.count("/") > 1:
        return [f"unexpected GroupVersion string: {value}"]
    return []


def fully_qualified_name(value: str) -> list[str]:
    """``IsFullyQualifiedName``: a DNS subdomain with at least three segments."""
    if not value:
        return ["name: Required value"]
    errors = dns1123_subdomain(value)
    if errors:
        return errors
    if len(value.split(".")) < 3:
        return [f"{value!r}: should be a domain with at least three segments separated by dots"]
    return []


def _has_wildcard(items: list) -> bool:
    return "*" in items


def _resources(resources: list[str]) -> list[str]:
    errors = []
    if not resources:
        errors.append("resources: Required value")
    wildcard_sub: set = set()
    wildcard_res: set = set()
    double = single = plain = False
    for item in resources:
        if not item:
            errors.append("resources[]: Required value")
            continue
        double |= item == "*/*"
        single |= item == "*"
        if "/" not in item:
            plain = item != "*"
            continue
        res, sub = item.split("/", 1)
        if res in wildcard_sub:
            errors.append(f"if '{res}/*' is present, must not specify {item}")
        if sub in wildcard_res:
            errors.append(f"if '*/{sub}' is present, must not specify {item}")
        if sub == "*":
            wildcard_sub.add(res)
        if res == "*":
            wildcard_res.add(sub)
    if len(resources) > 1 and double:
        errors.append("if '*/*' is present, must not specify other resources")
    if single and plain:
        errors.append("if '*' is present, must not specify other resources without subresources")
    return errors


def webhook_rule(rule: dict) -> list[str]:
    """``ValidateRuleWithOperations`` (admissionregistration/v1)."""
    errors = []
    operations = rule.get("operations") or []
    if not operations:
        errors.append("operations: Required value")
    if len(operations) > 1 and _has_wildcard(operations):
        errors.append("operations: if '*' is present, must not specify other operations")
    for name in ("apiGroups", "apiVersions"):
        values = rule.get(name) or []
        if not values:
            errors.append(f"{name}: Required value")
        if len(values) > 1 and _has_wildcard(values):
            errors.append(f"{name}: if '*' is present, must not specify other values")
    if any(v == "" for v in rule.get("apiVersions") or []):
        errors.append("apiVersions[]: Required value")
    errors += _resources(rule.get("resources") or [])
    return errors


def admission_webhook(binding: dict) -> list[str]:
    """``ValidateValidatingWebhook`` as shell-operator runs it for one binding."""
    name = binding.get("name", "")
    errors = [f"webhook {name!r}: {e}" for e in fully_qualified_name(name)]
    for rule in binding.get("rules") or []:
        errors += [f"webhook {name!r} rules: {e}" for e in webhook_rule(rule)]
    timeout = binding.get("timeoutSeconds")
    if timeout is not None and not 1 <= timeout <= 30:
        errors.append(f"webhook {name!r}: timeoutSeconds {timeout}: "
                      "the timeout value must be between 1 and 30 seconds")
    namespace = (binding.get("namespace") or {}).get("labelSelector")
    errors += [f"webhook {name!r} namespaceSelector: {e}" for e in label_selector(namespace)]
    errors += [f"webhook {name!r} objectSelector: {e}"
               for e in label_selector(binding.get("labelSelector"))]
    return errors
