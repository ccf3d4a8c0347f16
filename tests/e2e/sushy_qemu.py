#!/usr/bin/env python3
"""sushy-emulator (sushy-tools) whose systems are driven by a chassis control program.

Run it with the Python of the venv that holds sushy-tools:

    /opt/kiln-venv/bin/python tests/e2e/sushy_qemu.py --config sushy.conf [sushy-emulator options]

The config is a normal sushy-emulator config with the fake driver enabled
(SUSHY_EMULATOR_FAKE_DRIVER = True, SUSHY_EMULATOR_FAKE_SYSTEMS = [...]). Power and boot calls
for a system run its control program, found in this order: the system entry's
'chassis_control' key, the config's KILN_CHASSIS_CONTROL, the environment's KILN_CHASSIS_CONTROL.
The program speaks OpenIPMI's "chassis_control" protocol (the one ipmi_sim uses), so the same
program can sit behind both an IPMI and a Redfish BMC:

    PROG <mc> get power boot      prints "power:0|1" and "boot:none|pxe|default|cdrom|bios"
    PROG <mc> set power 1|0       power on / hard off
    PROG <mc> set reset 1         hard reset (off, then on)
    PROG <mc> set shutdown 1      ACPI power button (the OS decides)
    PROG <mc> set boot pxe|default|cdrom|bios|none
    PROG <mc> set bootmode uefi|legacy   (an addition: programs that do not know it ignore it)

<mc> is the system entry's 'chassis_mc', else the config's KILN_CHASSIS_MC, else "0x20".
A non-zero exit status becomes an HTTP 500 with the program's stderr.

Beyond the stock fake driver this honours what a real BMC does and sushy-tools does not:
BootSourceOverrideEnabled Once / Continuous / Disabled (a Once override is cleared when the host
next boots: power on, restart, power cycle), BootSourceOverrideMode through the program, the
BiosSetup and None targets, and PowerCycle; power changes take effect before the reply, as far as
the program makes them so (the stock fake driver applies them after a random 1-11 s delay).

--port-file PATH (ours, taken off the command line before sushy-emulator parses the rest): the
emulator's own socket is bound and listening before PATH appears, holding the port it got, so a
config may say SUSHY_EMULATOR_LISTEN_PORT = 0 ("any free port"). A parent that reads PATH knows
the port is this process's and accepts connections (they queue until the server loop runs); no
"pick a free port, hand it over" race, and no probe that another emulator could answer.
"""
import json
import os
import subprocess
import sys

import flask
from werkzeug import serving

from sushy_tools import error
from sushy_tools.emulator import main as emu
from sushy_tools.emulator.resources.systems import fakedriver

# Redfish BootSourceOverrideTarget <-> the program's boot device names.
TO_PROGRAM = {'Pxe': 'pxe', 'Hdd': 'default', 'Cd': 'cdrom',
              'BiosSetup': 'bios', 'None': 'none'}
FROM_PROGRAM = {v: k for k, v in TO_PROGRAM.items()}
ENABLED_VALUES = ['Disabled', 'Once', 'Continuous']
MODE_VALUES = ['UEFI', 'Legacy']
RESET_TYPES = ['On', 'ForceOn', 'ForceOff', 'GracefulShutdown',
               'GracefulRestart', 'ForceRestart', 'PowerCycle']
PROGRAM_TIMEOUT_S = 120


class ChassisControlDriver(fakedriver.FakeDriver):
    """The fake driver's bookkeeping, with power and boot delegated to the program."""

    @property
    def driver(self):
        return '<chassis-control>'

    def _program(self, system):
        prog = (system.get('chassis_control')
                or self._config.get('KILN_CHASSIS_CONTROL')
                or os.environ.get('KILN_CHASSIS_CONTROL'))
        if not prog:
            raise error.FishyError(
                'no chassis control program: set KILN_CHASSIS_CONTROL')
        mc = str(system.get('chassis_mc')
                 or self._config.get('KILN_CHASSIS_MC') or '0x20')
        return prog, mc

    def _run(self, identity, *args):
        prog, mc = self._program(self._get(identity))
        try:
            done = subprocess.run([prog, mc, *args], stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True,
                                  timeout=PROGRAM_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise error.FishyError(f'chassis control {prog}: {exc}')
        if done.returncode != 0:
            raise error.FishyError(
                f'chassis control {prog} {" ".join(args)} exited '
                f'{done.returncode}: {done.stderr.strip()}')
        return done.stdout

    def _read(self, identity, key):
        for line in self._run(identity, 'get', key).splitlines():
            name, _, value = line.strip().partition(':')
            if name == key:
                return value.strip()
        raise error.FishyError(f'chassis control printed no "{key}:" line')

    # Power.

    def get_power_state(self, identity):
        return 'On' if self._read(identity, 'power') == '1' else 'Off'

    def set_power_state(self, identity, state):
        on = self.get_power_state(identity) == 'On'
        boots = False
        if state in ('On', 'ForceOn'):
            if not on:
                self._run(identity, 'set', 'power', '1')
                boots = True
        elif state == 'ForceOff':
            if on:
                self._run(identity, 'set', 'power', '0')
        elif state == 'GracefulShutdown':
            if on:
                self._run(identity, 'set', 'shutdown', '1')
        elif state in ('ForceRestart', 'GracefulRestart'):
            self._run(identity, 'set', 'reset', '1')
            boots = True
        elif state == 'PowerCycle':
            if on:
                self._run(identity, 'set', 'power', '0')
            self._run(identity, 'set', 'power', '1')
            boots = True
        else:
            raise error.NotSupportedError(
                f'ResetType {state} is not supported (allowed: '
                f'{", ".join(RESET_TYPES)})')
        if boots and self.get_boot_enabled(identity) == 'Once':
            # The host has booted with the one-time override: it is spent.
            self.set_boot_enabled(identity, 'Disabled')

    # Boot device, once/continuous, mode.

    def get_boot_device(self, identity):
        return FROM_PROGRAM.get(self._read(identity, 'boot'), 'None')

    def set_boot_device(self, identity, boot_source):
        if boot_source not in TO_PROGRAM:
            raise error.BadRequest(
                f'BootSourceOverrideTarget {boot_source} is not one of '
                f'{", ".join(TO_PROGRAM)}')
        self._run(identity, 'set', 'boot', TO_PROGRAM[boot_source])
        super().set_boot_device(identity, boot_source)

    def get_boot_enabled(self, identity):
        stored = self._get(identity).get('boot_enabled')
        if stored:
            return stored
        return 'Disabled' if self.get_boot_device(identity) == 'None' else 'Continuous'

    def set_boot_enabled(self, identity, enabled):
        self._update(identity, boot_enabled=enabled)
        if enabled == 'Disabled':
            self._run(identity, 'set', 'boot', 'none')

    def set_boot_mode(self, identity, boot_mode):
        if boot_mode not in MODE_VALUES:
            raise error.BadRequest(
                f'BootSourceOverrideMode {boot_mode} is not one of '
                f'{", ".join(MODE_VALUES)}')
        self._run(identity, 'set', 'bootmode', boot_mode.lower())
        super().set_boot_mode(identity, boot_mode)


def _error(message, code=400):
    body = {'error': {
        'code': 'Base.1.0.GeneralError', 'message': message,
        '@Message.ExtendedInfo': [{
            'MessageId': 'Base.1.8.PropertyValueNotInList',
            'Message': message}]}}
    return flask.Response(json.dumps(body), status=code,
                          content_type='application/json')


def _is_system_request():
    return flask.request.endpoint == 'system_resource'


def check_boot_patch():
    """Refuses what the stock emulator would silently accept."""
    if not (_is_system_request() and flask.request.method == 'PATCH'):
        return None
    boot = (flask.request.get_json(silent=True) or {}).get('Boot') or {}
    enabled = boot.get('BootSourceOverrideEnabled')
    if enabled is not None and enabled not in ENABLED_VALUES:
        return _error(f'The value {enabled} for the property '
                      'BootSourceOverrideEnabled is not in the list of '
                      'acceptable values.')
    return None


def finish_system_request(response):
    if not _is_system_request() or response.status_code not in (200, 204):
        return response
    identity = flask.request.view_args.get('identity')
    systems = emu.app.systems
    if flask.request.method == 'PATCH':
        boot = (flask.request.get_json(silent=True) or {}).get('Boot') or {}
        enabled = boot.get('BootSourceOverrideEnabled')
        if enabled:
            systems.set_boot_enabled(identity, enabled)
        elif boot.get('BootSourceOverrideTarget'):
            # A target without Enabled while no override is active: the client means an
            # override, so make it a one-time one (otherwise Enabled would contradict Target).
            if systems.get_boot_enabled(identity) == 'Disabled':
                systems.set_boot_enabled(identity, 'Once')
        return response
    if flask.request.method == 'GET':
        data = json.loads(response.get_data())
        boot = data.setdefault('Boot', {})
        boot['BootSourceOverrideEnabled'] = systems.get_boot_enabled(identity)
        boot['BootSourceOverrideEnabled@Redfish.AllowableValues'] = ENABLED_VALUES
        boot['BootSourceOverrideTarget@Redfish.AllowableValues'] = list(TO_PROGRAM)
        boot['BootSourceOverrideMode@Redfish.AllowableValues'] = MODE_VALUES
        reset = data.get('Actions', {}).get('#ComputerSystem.Reset')
        if reset is not None:
            reset['ResetType@Redfish.AllowableValues'] = RESET_TYPES
        data.setdefault('Model', 'chassis-control')
        response.set_data(json.dumps(data, indent=4))
    return response


def take_port_file(argv):
    """Removes `--port-file PATH` (or `--port-file=PATH`) from argv; returns PATH or None."""
    for i, arg in enumerate(argv):
        if arg == '--port-file' and i + 1 < len(argv):
            path = argv[i + 1]
            del argv[i:i + 2]
            return path
        if arg.startswith('--port-file='):
            del argv[i]
            return arg.split('=', 1)[1]
    return None


def run_reporting_port(port_file):
    """An app.run that binds (port 0: any free one), writes the bound port to port_file, serves."""
    def run(host=None, port=None, ssl_context=None, **_options):
        # Flask's app.run defaults: threaded, no reloader (main.py sets no debug reloader).
        server = serving.make_server(host or '127.0.0.1', int(port or 0), emu.app,
                                     threaded=True, ssl_context=ssl_context)
        tmp = f'{port_file}.{os.getpid()}.tmp'
        with open(tmp, 'w') as f:
            f.write(f'{server.port}\n')
        os.rename(tmp, port_file)  # atomic: a reader never sees a partial number
        print(f'listening on {host}:{server.port} (pid {os.getpid()})', file=sys.stderr,
              flush=True)
        server.serve_forever()
    return run


def main():
    fakedriver.FakeDriver = ChassisControlDriver  # main.py looks it up when it builds the driver
    emu.app.before_request(check_boot_patch)
    emu.app.after_request(finish_system_request)
    port_file = take_port_file(sys.argv)
    if port_file:
        emu.app.run = run_reporting_port(port_file)
    return emu.main()


if __name__ == '__main__':
    sys.exit(main())
