"""Where settings come from: flag, environment, config file, default; and their errors."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from deploy.settings import OPTIONS, UsageError, add_options, load_config_file, resolve
from tests.conftest import REPO_ROOT
from tests.deploy.conftest import clean_environ

NAMES = ["endpoint_name", "instance_count", "instance_type", "env"]


def _resolve(argv, environ, file_values):
    parser = argparse.ArgumentParser()
    add_options(parser, NAMES)
    return resolve(parser.parse_args(argv), NAMES, environ, file_values, "xgb-deploy.toml")


def test_flag_beats_env_beats_file_beats_default():
    file_values = {"endpoint_name": "from-file", "instance_count": 4, "instance_type": "ml.c5.large"}
    env = {"XGB_DEPLOY_ENDPOINT_NAME": "from-env", "XGB_DEPLOY_INSTANCE_COUNT": "6"}
    values = _resolve(["--endpoint-name", "from-flag"], env, file_values)
    assert values["endpoint_name"] == "from-flag"
    assert values["instance_count"] == 6                  # env, parsed as the flag would be
    assert values["instance_type"] == "ml.c5.large"       # file
    assert values["env"] == []                            # default
    assert _resolve([], {}, {})["instance_type"] == OPTIONS["instance_type"].default


def test_repeatable_settings_from_env_and_file():
    assert _resolve([], {"XGB_DEPLOY_ENV": "A=1, B=x=y"}, {})["env"] == [("A", "1"), ("B", "x=y")]
    assert _resolve([], {}, {"env": ["C=3"]})["env"] == [("C", "3")]
    assert _resolve(["--env", "D=4", "--env", "E=5"], {}, {})["env"] == [("D", "4"), ("E", "5")]


def test_bad_values_name_their_source():
    with pytest.raises(UsageError, match=r"\$XGB_DEPLOY_INSTANCE_COUNT: .*positive"):
        _resolve([], {"XGB_DEPLOY_INSTANCE_COUNT": "0"}, {})
    with pytest.raises(UsageError, match="instance_count in xgb-deploy.toml"):
        _resolve([], {}, {"instance_count": "many"})


def test_config_file_is_found_read_and_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config_file(None, {}) == ({}, None)
    (tmp_path / "xgb-deploy.toml").write_text('endpoint_name = "bid-filter"\ninstance_count = 3\n')
    assert load_config_file(None, {})[0] == {"endpoint_name": "bid-filter", "instance_count": 3}
    other = tmp_path / "prod.toml"
    other.write_text('role_arn = "arn:aws:iam::1:role/r"\n')
    assert load_config_file(None, {"XGB_DEPLOY_CONFIG": str(other)})[0] == {"role_arn": "arn:aws:iam::1:role/r"}
    with pytest.raises(UsageError, match="does not exist"):
        load_config_file(str(tmp_path / "nope.toml"), {})
    other.write_text('endpont_name = "typo"\n')
    with pytest.raises(UsageError, match="unknown keys endpont_name"):
        load_config_file(str(other), {})
    other.write_text('endpoint_name = \n')
    with pytest.raises(UsageError, match="prod.toml"):
        load_config_file(str(other), {})


def test_the_cli_reads_the_config_file_and_reports_what_is_missing(aws, cli, tmp_path, model_data, role_arn):
    (tmp_path / "xgb-deploy.toml").write_text(f'endpoint_name = "from-file"\nrole_arn = "{role_arn}"\n'
                                               f'instance_type = "ml.c5.large"\n')
    status, _, err = cli("endpoint", "--model-data", model_data)
    assert status == 2
    assert "--image-uri (or $XGB_DEPLOY_IMAGE_URI, or image_uri in xgb-deploy.toml)" in err
    assert "--role-arn" not in err and "--endpoint-name" not in err
    status, out, err = cli("endpoint", "--model-data", model_data, "--image-uri", "img")
    assert status == 0, err
    assert out.startswith("from-file-")


def test_bad_usage_exits_2_with_a_message(aws, cli):
    status, _, err = cli("endpoint", "--endpoint-name", "bad_name!", "--image-uri", "i", "--role-arn", "r",
                         "--model-data", "s3://b/k")
    assert status == 2 and "endpoint name 'bad_name!'" in err
    status, _, err = cli("endpoint", "--endpoint-name", "ok", "--image-uri", "i", "--role-arn", "r",
                         "--model-data", "/local/model.tar.gz")
    assert status == 2 and "must be an s3:// URL" in err


def test_no_region_and_no_credentials_are_clear_errors(aws, cli, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    status, _, err = cli("teardown", "--endpoint-name", "e")
    assert status == 2 and "no AWS region" in err
    monkeypatch.setenv("AWS_REGION", "us-east-1")          # read as well, as GitHub's credentials action sets it
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    status, _, err = cli("teardown", "--endpoint-name", "e")
    assert status == 1 and "no AWS credentials found" in err


def test_the_console_script_and_module_run_without_traceback(local_aws, tmp_path):
    env = clean_environ({"AWS_ENDPOINT_URL": local_aws, "AWS_ACCESS_KEY_ID": "testing",
                         "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                         "AWS_EC2_METADATA_DISABLED": "true", "PYTHONPATH": str(REPO_ROOT)})
    script = os.path.join(os.path.dirname(sys.executable), "xgb-deploy")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0
    assert all(c in done.stdout for c in ("upload", "endpoint", "autoscale", "invoke", "rollback", "teardown"))
    done = subprocess.run([sys.executable, "-m", "deploy", "invoke", "--endpoint-name", "nowhere", "--body", "1"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    assert "not found" in done.stderr and "Traceback" not in done.stderr


def test_the_autoscaling_target_keeps_its_public_name_target(tmp_path):
    """Inside it is `invocations_target`; flag, env and config key stay `target`."""
    parser = argparse.ArgumentParser()
    add_options(parser, ["invocations_target"])
    assert resolve(parser.parse_args(["--target", "5"]), ["invocations_target"], {}, {})["invocations_target"] == "5"
    assert resolve(parser.parse_args([]), ["invocations_target"], {"XGB_DEPLOY_TARGET": "6"},
                   {})["invocations_target"] == "6"
    config = tmp_path / "x.toml"
    config.write_text('target = "7"\n')
    file_values, where = load_config_file(str(config), {})
    assert resolve(parser.parse_args([]), ["invocations_target"], {}, file_values, where)["invocations_target"] == "7"
    config.write_text('invocations_target = "7"\n')
    with pytest.raises(UsageError, match="unknown keys invocations_target"):
        load_config_file(str(config), {})
