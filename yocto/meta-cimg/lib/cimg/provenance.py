"""The provenance and license record of a .cimg image packed by cimg.bbclass.

cimg-build takes a program from the recipe's ${D} and the libraries it
needs from the recipe's target sysroot. Those libraries belong to other
recipes (glibc, zlib, ...): the record says, for every file of the image,
where it came from, which recipe staged it into the sysroot and under which
LICENSE that recipe is, so that whoever ships the image ships a true license
manifest with it.

Inputs, all plain files so that this runs outside bitbake too (the
repository's tests run it against a sysroot shaped like a recipe's):

- inspect: the parsed output of `cimg-build inspect --files --json IMAGE`;
  each packed file has a "source" (a path relative to workdir when the
  class ran cimg-build from ${WORKDIR}, as it does).
- installeddeps: ${RECIPE_SYSROOT_NATIVE}/installeddeps, where bitbake's
  staging (staging.bbclass, extend_recipe_sysroot) keeps, per recipe it
  installed into the recipe's sysroots, a link RECIPE -> RECIPE.TASKHASH,
  a file listing the absolute paths it installed.
- license_dir: ${LICENSE_DIRECTORY}, where do_populate_lic of each recipe
  writes ARCH/RECIPE/recipeinfo ("LICENSE: ...", "PV: ...", "PR: ...").
"""

import glob
import os


def sysroot_owners(installeddeps):
    """Map each path staged into the recipe's sysroots to its recipe."""
    owners = {}
    if not os.path.isdir(installeddeps):
        return owners
    for name in sorted(os.listdir(installeddeps)):
        link = os.path.join(installeddeps, name)
        if not os.path.islink(link):
            continue
        target = os.readlink(link)
        if not target.startswith(name + ".") or target.endswith(".complete") or name.endswith(".complete"):
            continue
        with open(link) as f:
            for line in f:
                path = line.strip()
                if not path:
                    continue
                owners[os.path.normpath(path)] = name
                owners.setdefault(os.path.realpath(path), name)
    return owners


def recipe_info(license_dir, recipe):
    """The recipeinfo of a recipe (LICENSE, PV, PR), or {} if none was deployed."""
    if not license_dir:
        return {}
    for path in sorted(glob.glob(os.path.join(license_dir, "*", recipe, "recipeinfo"))):
        info = {}
        with open(path) as f:
            for line in f:
                if ": " in line:
                    key, value = line.rstrip("\n").split(": ", 1)
                    info[key.lower()] = value
        return info
    return {}


def record(inspect, workdir, image_dir, installeddeps, license_dir, recipe):
    """The record, a dict ready for json.dump.

    recipe: the packing recipe's own pn, pv, pr, license (and any more
    keys worth recording). The result has "unattributed": the image's
    paths whose source is in no known place (the caller warns).
    """
    owners = sysroot_owners(installeddeps)
    image_dir = os.path.realpath(image_dir)
    files, recipes, unattributed = [], {}, []
    for f in inspect.get("files") or []:
        source = f.get("source")
        if not source:
            continue  # directories, mount points, generated files
        path = source if os.path.isabs(source) else os.path.join(workdir, source)
        path = os.path.normpath(path)
        entry = {"path": f["path"], "source": source, "size": f.get("size", 0)}
        if f.get("reason"):
            entry["reason"] = f["reason"]
        real = os.path.realpath(path)
        if real == image_dir or real.startswith(image_dir + os.sep) or path.startswith(image_dir + os.sep):
            owner = recipe["pn"]
            entry["recipe"], entry["license"] = owner, recipe.get("license", "")
        elif path in owners or real in owners:
            owner = owners.get(path) or owners[real]
            info = recipes.get(owner)
            if info is None:
                info = recipe_info(license_dir, owner)
                if not info:
                    info = {"license": "unknown (no recipeinfo in LICENSE_DIRECTORY)"}
                recipes[owner] = info
            entry["recipe"], entry["license"] = owner, info.get("license", "")
        else:
            entry["recipe"], entry["license"] = "unknown", "unknown"
            unattributed.append(f["path"])
        files.append(entry)
    manifest = inspect.get("manifest") or {}
    out = {
        "image": {
            "name": manifest.get("Name", ""),
            "version": manifest.get("Version", ""),
            "arch": manifest.get("Arch", ""),
            "root_hash": inspect.get("root_hash", ""),
            "size": inspect.get("size", 0),
            "signers": inspect.get("signers") or [],
        },
        "recipe": recipe,
        "files": files,
        "recipes": {},
        "unattributed": unattributed,
    }
    # Every recipe the image draws from, with its license: what a license
    # manifest of a device image that ships this image must list.
    out["recipes"][recipe["pn"]] = {k: recipe.get(k, "") for k in ("pv", "pr", "license")}
    for name, info in sorted(recipes.items()):
        out["recipes"][name] = {k: info.get(k, "") for k in ("pv", "pr", "license")}
    return out
