// A person's encrypted history surviving a new computer, with Element's own client stack (matrix-js-sdk and
// its Rust crypto). Driven by tests/test_key_backup_interop.py: lines starting with "@@" are JSON steps for
// the test, everything else is the SDK's own logging. The password and the recovery key come in the
// environment (CIVMATRIX_PASSWORD, CIVMATRIX_RECOVERY_KEY), never on the command line.
//
//   argv: "first" | "second", homeserver URL (nginx in front of Synapse), directory login, then
//         first: the messages to send (a JSON list); second: the room id "first" printed
//
//   first:  reads /.well-known/matrix/client; logs in (a new device); as Element does when the well-known
//           asks for a backup, sets up cross-signing, secret storage under a generated recovery key and a key
//           backup; creates a private room, sends the messages, waits until their room key is backed up,
//           prints {"step": "backed_up", "recovery_key", ...} and logs the device out (the old computer
//           is gone, so nothing can forward the key to the new one but the backup).
//   second: logs in again (another device); prints what it can read before recovery, enters the recovery
//           key, restores the backup and prints the texts it decrypts.

import * as sdk from "matrix-js-sdk";
import { decodeRecoveryKey } from "matrix-js-sdk/lib/crypto-api/index.js";
import { logger } from "matrix-js-sdk/lib/logger.js";

const [mode, baseUrl, login, last] = process.argv.slice(2);
const password = process.env.CIVMATRIX_PASSWORD;
logger.setLevel("error");
const out = (o) => process.stdout.write("@@" + JSON.stringify(o) + "\n");
const fail = (msg) => {
    out({ step: "error", message: msg });
    process.exit(1);
};
setTimeout(() => fail(`timed out (${mode})`), 120_000).unref();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// What Element sends for the login form and again when the server asks to confirm it is the person.
const passwordAuth = { type: "m.login.password", identifier: { type: "m.id.user", user: login }, password };

async function loggedIn(deviceName, cryptoCallbacks) {
    const session = await sdk.createClient({ baseUrl }).loginRequest({ ...passwordAuth, initial_device_display_name: deviceName });
    const client = sdk.createClient({
        baseUrl, userId: session.user_id, accessToken: session.access_token, deviceId: session.device_id, cryptoCallbacks,
    });
    await client.initRustCrypto({ useIndexedDB: false });
    const prepared = new Promise((resolve) => client.on(sdk.ClientEvent.Sync, (s) => s === "PREPARED" && resolve()));
    await client.startClient({ initialSyncLimit: 20 });
    await prepared;
    return client;
}

// The texts of the room's messages, in order; null for a message this device cannot decrypt.
async function texts(client, roomId) {
    const room = client.getRoom(roomId);
    if (!room) fail(`${roomId} is not among this device's rooms`);
    const read = [];
    for (const ev of room.getLiveTimeline().getEvents()) {
        if (!ev.isEncrypted()) continue;
        if (ev.isDecryptionFailure() || !ev.getClearContent()) await client.decryptEventIfNeeded(ev, { isRetry: true });
        if (ev.isDecryptionFailure()) read.push(null);
        else if (ev.getType() === "m.room.message") read.push(ev.getContent().body);
    }
    return read;
}

async function first() {
    // Element reads the client well-known before it decides whether setting up recovery may be skipped.
    const wellKnown = await (await fetch(`${baseUrl}/.well-known/matrix/client`)).json();
    const e2ee = wellKnown["io.element.e2ee"] ?? {};
    out({ step: "well_known", e2ee });
    if (e2ee.secure_backup_required !== true) fail("the well-known does not ask for a key backup");
    if (!(e2ee.secure_backup_setup_methods ?? ["key"]).includes("key")) fail("the well-known forbids a generated key");

    let secretStorageKey = null; // [keyId, key], as Element keeps it while the setup dialog is open
    const client = await loggedIn("old computer", {
        cacheSecretStorageKey: (keyId, _info, key) => (secretStorageKey = [keyId, key]),
        getSecretStorageKey: async ({ keys }) => (secretStorageKey && keys[secretStorageKey[0]] ? secretStorageKey : null),
    });
    const crypto = client.getCrypto();
    await crypto.bootstrapCrossSigning({ authUploadDeviceSigningKeys: (makeRequest) => makeRequest(passwordAuth) });
    let recoveryKey = null;
    await crypto.bootstrapSecretStorage({
        setupNewSecretStorage: true,
        setupNewKeyBackup: true,
        createSecretStorageKey: async () => {
            const generated = await crypto.createRecoveryKeyFromPassphrase(); // no passphrase: a random key
            recoveryKey = generated.encodedPrivateKey;
            return generated;
        },
    });
    // As Element does after the setup dialog: (re)start the backup engine on the new version.
    const check = await crypto.checkKeyBackupAndEnable();
    const version = await crypto.getActiveSessionBackupVersion();
    if (!version) fail(`no active key backup after setting up recovery: ${JSON.stringify(check)}`);

    // A private room, created as Element's dialog creates one; the server decides whether it is encrypted.
    const { room_id: roomId } = await client.createRoom({ preset: sdk.Preset.PrivateChat, name: "New device check" });
    for (let i = 0; !(client.getRoom(roomId) && (await crypto.isEncryptionEnabledInRoom(roomId))); i++) {
        if (i === 50) fail("the server did not encrypt a private room (encryption_enabled_by_default_for_room_type)");
        await sleep(100);
    }
    const messages = JSON.parse(last);
    for (const text of messages) await client.sendTextMessage(roomId, text);

    // The backup engine uploads new room keys in the background; wait until the server holds this room's.
    for (;;) {
        const backedUp = await client.http.authedRequest(sdk.Method.Get, `/room_keys/keys/${encodeURIComponent(roomId)}`, { version });
        if (Object.keys(backedUp.sessions ?? {}).length > 0) break;
        await sleep(250);
    }
    out({ step: "backed_up", room: roomId, version, recovery_key: recoveryKey, device: client.getDeviceId() });
    client.stopClient();
    await client.logout(true);
}

async function second(roomId) {
    const recoveryKey = process.env.CIVMATRIX_RECOVERY_KEY;
    const client = await loggedIn("new computer", {
        // Element's "Enter your recovery key" dialog: the key the person typed opens the default secret storage key.
        getSecretStorageKey: async ({ keys }) => {
            const keyId = await client.secretStorage.getDefaultKeyId();
            return keyId && keys[keyId] ? [keyId, decodeRecoveryKey(recoveryKey)] : null;
        },
    });
    const crypto = client.getCrypto();
    const before = await texts(client, roomId);
    out({ step: "before_recovery", texts: before, device: client.getDeviceId() });

    await crypto.loadSessionBackupPrivateKeyFromSecretStorage();
    const restored = await crypto.restoreKeyBackup();
    let after = [];
    for (let i = 0; i < 40; i++) {
        after = await texts(client, roomId);
        if (after.length > 0 && after.every((t) => t !== null)) break;
        await sleep(250);
    }
    out({ step: "restored", imported: restored.imported, total: restored.total, texts: after });
    client.stopClient();
}

try {
    if (mode === "first") await first();
    else if (mode === "second") await second(last);
    else fail(`unknown mode ${mode}`);
} catch (err) {
    fail(`${mode}: ${err?.stack ?? err}`);
}
process.exit(0);
