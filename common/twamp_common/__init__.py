"""Sans-I/O TWAMP: wire formats, timestamps, crypto, control state machines and statistics.

The modules hold one concern each: ``codes`` (registered numbers), ``errors`` (the exception
hierarchy), ``timestamp`` (NTP time and Error Estimate), ``control_messages`` and
``test_packets`` (wire formats), ``crypto`` (keys, token, control stream cipher, test packet
protection), ``control`` (the Control-Client and Server state machines), ``stats`` (round-trip
statistics), ``clock`` (the kernel's clock state, read by the drivers), ``keys`` (keys files),
``schedule`` and ``traffic`` (send schedules and traffic models), ``test_session`` and
``sender_codec`` (the Session-Sender and its TWAMP and STAMP packets), ``stamp``,
``stamp_tlv``, ``stamp_reflector``, ``stamp_sender`` and ``stamp_access_report`` (STAMP and
its TLVs), ``mos`` (the E-model), ``ipfix`` (the IPFIX encoder), ``udp_options`` (socket
options and ancillary data) and ``version``.  ``service`` is not
protocol: it is what the two daemons share with systemd (sd_notify, the journal, the
configuration error), here because this is the one package both depend on.
"""
