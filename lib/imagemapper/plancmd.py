"""``image-mapper plan``: the command line of the relocation plan (see docs/relocating.md).

    plan [rule options of rewrite] [-n NS] [-f MANIFESTS]... [--from-cluster] [IMAGE...]
         [--format plain|json|skopeo|skopeo-copy|crane] [--explain]
         [--check [--insecure-registry HOST]... [--ca-file F] [--authfile F]
                  [--timeout S] [--parallel N]]

Exit status: 0; with --check, 1 if a destination is missing, 3 if none is missing but
some could not be checked (unreachable, refused, invalid); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import ssl
import sys

from imagemapper import plan as planlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from imagemapper.registry import Result

EXIT_MISSING, EXIT_UNCHECKED = 1, 3
# Every kind that holds a Pod spec, fully qualified so that no aggregated API can shadow one.
POD_KINDS = ("pods", "podtemplates", "replicationcontrollers", "deployments.apps", "replicasets.apps",
             "statefulsets.apps", "daemonsets.apps", "jobs.batch", "cronjobs.batch")
KUBECTL_TIMEOUT = 120.0  # one List of a whole cluster can take a while


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser],
               rewrite: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``plan`` subcommand; it also takes every rule option that ``rewrite`` takes."""
    pl = sub.add_parser("plan", help="list the images to copy (source -> destination); --check them",
                        description="List the copies the rules imply (source -> destination), once each, "
                                    "for a copy tool; --check asks each destination registry. "
                                    "See docs/relocating.md.")
    pl.add_argument("-f", "--filename", action="append", default=[], metavar="MANIFESTS",
                    help="plan the Pods and Pod templates of a manifest stream ('-' for stdin); repeatable")
    pl.add_argument("--from-cluster", action="store_true",
                    help="plan every Pod and Pod template of the current kube context (through kubectl)")
    pl.add_argument("--context", help="kube context for --from-cluster")
    pl.add_argument("--format", choices=planlib.FORMATS, default="plain",
                    help="plain 'SOURCE DESTINATION' lines (default), json, skopeo (a sync YAML when "
                         "one sync run fits, else a copy script), skopeo-copy, crane")
    pl.add_argument("--explain", action="store_true", help="plain format: add the rule that decided")
    pl.add_argument("--check", action="store_true",
                    help="ask each destination registry whether the image is there")
    pl.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]",
                    help="--check: HTTPS without certificate checks, then plain HTTP, for this registry; "
                         "a skopeo sync file gets tls-verify: false for it")
    pl.add_argument("--ca-file", metavar="PEM", help="--check: trust this CA bundle (self-signed registries)")
    pl.add_argument("--authfile", metavar="FILE", help="--check: credentials file searched first")
    pl.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                    help="--check: time allowed per image (default 10)")
    pl.add_argument("--parallel", type=int, default=8, metavar="N",
                    help="--check: images checked at once (default 8)")
    pl.add_argument("images", nargs="*", metavar="IMAGE",
                    help="image references to plan, as a Pod in namespace NS would use them")
    from imagemapper import cli

    cli.add_rule_options(pl)  # the same rules and settings as rewrite
    return pl


def _uses(args: argparse.Namespace) -> list[planlib.Use]:
    from imagemapper import cli

    uses = [planlib.Use(image, args.namespace, f"argument {i + 1}") for i, image in enumerate(args.images)]
    objects = []
    for path in args.filename:
        objects += cli._yaml_docs(path, cli._read(path))
    if args.from_cluster:
        from imagemapper import kubeclient

        try:  # one List of every kind that holds a Pod spec
            objects += kubeclient.Kubectl(context=args.context, timeout=KUBECTL_TIMEOUT).list(",".join(POD_KINDS))
        except kubeclient.KubectlError as exc:
            raise cli.UsageError(f"--from-cluster: {exc}") from None
    for obj in objects:
        uses += planlib.object_uses(obj, cli.POD_SPECS, args.namespace)
    return uses


def run(args: argparse.Namespace) -> int:
    from imagemapper import cli

    if not (args.images or args.filename or args.from_cluster):
        raise cli.UsageError("plan needs IMAGE arguments, -f MANIFESTS or --from-cluster")
    if args.timeout <= 0 or args.parallel < 1:
        raise cli.UsageError("--timeout must be positive and --parallel at least 1")
    rules_ = cli.Rules(args)
    plan = planlib.build(_uses(args), rules_.decide, rules_.skipped)
    rules_.report()
    _report_plan(plan)
    if not args.check:
        sys.stdout.write(planlib.render(plan, args.format, args.explain, tuple(args.insecure_registry)))
        return 0
    return _check(plan, args)


def _report_plan(plan: planlib.Plan) -> None:
    """What is not a pair goes to stderr, so the output stays pipeable."""
    for line in plan.errors:
        print(f"error: {line}", file=sys.stderr)
    for entry in (plan.unchanged[k] for k in sorted(plan.unchanged)):
        print(f"note: {entry['image']} is not relocated ({entry['reason']}; "
              f"{', '.join(entry['seen'][:3])}{' ...' if len(entry['seen']) > 3 else ''})", file=sys.stderr)


def _check(plan: planlib.Plan, args: argparse.Namespace) -> int:
    from imagemapper import credentials, registry

    store = credentials.CredentialStore(credentials.default_files(authfile=args.authfile))
    try:
        client = registry.Client(store, tuple(args.insecure_registry), args.ca_file, args.timeout)
    except (OSError, ssl.SSLError) as exc:
        from imagemapper import cli

        raise cli.UsageError(f"--ca-file {args.ca_file}: {getattr(exc, 'strerror', None) or exc}") from None
    pairs = plan.sorted_pairs()
    # what a kubelet will pull: the digest when the Pod has one, else the tag
    results = registry.check_all(client, [str(p.destination) for p in pairs], args.parallel)
    if args.format == "json":
        import json

        doc = planlib.as_json(plan)
        for entry, pair in zip(doc["pairs"], pairs):
            entry["check"] = results[str(pair.destination)].as_dict()
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        for pair in pairs:
            print(_check_line(pair, results[str(pair.destination)]))
    sys.stdout.flush()  # the summary follows the lines, also when both go to one pipe
    counts = {s: sum(1 for r in results.values() if r.status == s)
              for s in (registry.PRESENT, registry.MISSING)}
    unchecked = len(results) - counts[registry.PRESENT] - counts[registry.MISSING]
    print(f"{len(results)} destination(s): {counts[registry.PRESENT]} present, "
          f"{counts[registry.MISSING]} missing, {unchecked} not checked", file=sys.stderr)
    if counts[registry.MISSING]:
        return EXIT_MISSING
    return EXIT_UNCHECKED if unchecked or plan.errors else 0


def _check_line(pair: planlib.Pair, result: Result) -> str:
    if result.status == "present":
        return f"present  {pair.destination}"
    return (f"{result.status.upper():<8} {pair.destination}: registry {result.registry}: {result.detail} "
            f"(copy of {pair.copy_from}; {' '.join(pair.rules[0].split())})")
